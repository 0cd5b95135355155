"""Training: losses, sample batching and the trainer."""

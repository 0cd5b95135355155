"""Data access: the one raster reader, label decoding, scenes and splits."""

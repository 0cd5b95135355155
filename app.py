"""SegHZ: ``streamlit run app.py`` from the repository root (the workspace is ``$SEGHZ_WORKSPACE`` or ./workspace;
a fresh one is filled with the synthetic demo scenes on first start).

This entry script declares the app's pages -- Home, Map, Evaluate, Labels, Train, Align, the files of ``pages/``
at their usual URLs (``/Map`` …) -- and runs the one the browser asked for; Home is this file again, run as a page
(what is in the workspace, the active model, and where to go next). See :mod:`ui.home`.
"""
from pathlib import Path

from ui.home import main

main(Path(__file__))

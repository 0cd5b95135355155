"""Streamlit-side glue shared by the SegHZ app's pages (``app.py`` and ``pages/``); seghz/ never imports it."""

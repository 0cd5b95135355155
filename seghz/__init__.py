"""SegHZ: land-cover segmentation workbench (package layer; never imports Streamlit)."""
__version__ = "0.1.0"

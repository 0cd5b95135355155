"""Geography for the Map page: tile pyramids, pixel <-> map coordinates, offline Leaflet maps.

Two kinds of scenes (see :mod:`seghz.geo.tiles` for the exact conventions):

* **georeferenced** (a GeoTIFF with CRS + affine transform): shown on the standard Web-Mercator map,
  map coordinates are WGS84 latitude/longitude;
* **pixel-space** (no CRS: PNG/JPEG/plain TIFF): shown with Leaflet ``CRS.Simple`` where one map unit is
  one image pixel, ``lat = -row`` and ``lng = col`` -- never placed on Earth.

:mod:`seghz.geo.tiles` needs only numpy/rasterio/Pillow; :mod:`seghz.geo.webmap` builds folium maps whose
Leaflet/Leaflet.draw come from ``static/vendor`` (served by Streamlit at ``/app/static/vendor``).
Neither imports Streamlit.
"""
from seghz.geo.tiles import (
    GEOREF,
    PIXEL,
    PyramidInfo,
    RampSpec,
    RegionOverlay,
    build_pyramid,
    crs_kind,
    geojson_to_pixel_window,
    latlng_to_pixel,
    pixel_bounds,
    pixel_to_latlng,
    pixel_window_to_geojson,
    region_overlay,
    rgba_overlay_png,
    scalar_overlay,
    scalar_rgba,
    scene_bounds,
    scene_bounds_latlon,
    tile_dir,
    window_bounds,
)

__all__ = [
    "GEOREF",
    "PIXEL",
    "PyramidInfo",
    "RampSpec",
    "RegionOverlay",
    "build_pyramid",
    "crs_kind",
    "geojson_to_pixel_window",
    "latlng_to_pixel",
    "pixel_bounds",
    "pixel_to_latlng",
    "pixel_window_to_geojson",
    "region_overlay",
    "rgba_overlay_png",
    "scalar_overlay",
    "scalar_rgba",
    "scene_bounds",
    "scene_bounds_latlon",
    "tile_dir",
    "window_bounds",
]

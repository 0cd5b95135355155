"""The Map page's imagery in: "Import imagery" (a local file or tile folder, or an upload, imported as a new scene)
and "Fetch imagery" (map tiles over a WGS-84 box, downloaded by a background job into a new scene).

A fetch's box defaults to the drawn region (or the scene) of a georeferenced scene, never to pixel coordinates; a
pixel-space scene has no place on the Earth, so a box typed there fetches a separate scene. Before it is queued, the
fetch's tiles, download and mosaic size are shown (:mod:`seghz.geo.fetch`'s plan); more than ``LARGE_FETCH_TILES``
tiles needs an explicit confirmation (given again when the box, zoom or source changes), more than the fetch job's
cap ``FETCH_JOB_MAX_TILES`` is refused with the way out (a lower zoom or a smaller box). Error texts and job
messages are shown with secrets (API keys in URLs) redacted.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from seghz.data.scenes import import_imagery
from seghz.errors import DuplicateImportError, SegHZError
from seghz.geo.basemaps import fetch_bbox_default, fetch_sources
from seghz.geo.fetch import FETCH_JOB_MAX_TILES, LARGE_FETCH_TILES, BaiduPlan, parse_bbox, plan_baidu, plan_xyz
from seghz.security import check_server_path, redact_secrets


def import_panel(ws: Any) -> None:
    """The "Import imagery" expander: an import selects the new scene and reruns the page (its message stays)."""
    ss = st.session_state
    with st.expander("Import imagery"):
        st.caption("A GeoTIFF in any CRS (reprojected for display; no CRS = pixel space, never placed at a made-up "
                   "location), a PNG/JPEG (pixel space) or a folder of Baidu `{x}-{y}.jpeg` tiles (mosaicked and "
                   "shifted from BD-09 to WGS-84). Same as `python -m seghz import PATH`.")
        i1, i2, i3 = st.columns([4, 2, 1])
        imp_path = i1.text_input("Local path (file or tile folder)", key="map_import_path")
        imp_name = i2.text_input("Scene name (optional)", key="map_import_name")
        imp_zoom = i3.number_input("Baidu level", 3, 19, 16, key="map_import_zoom",
                                   help="Level of the tiles in a tile folder (the seed's folders hold level 16).")
        imp_file = st.file_uploader("…or upload an image", type=["tif", "tiff", "png", "jpg", "jpeg"],
                                    key="map_import_upload")
        if ss.pop("map_import_dup_used", False):  # "import again" counts for one import, not the session
            ss["map_import_dup"] = False
        again = st.checkbox("Import it even if it is already a scene", key="map_import_dup",
                            help="An image already imported (the same file content, or the same tile folder) "
                                 "opens its scene instead of making a second copy, unless this is ticked.")
        imp_clicked = st.button("Import", key="map_import_go")
        if imp_clicked and not (imp_path.strip() or imp_file):
            st.error("Give a local path (a file or a tile folder) or upload an image first.")
        elif imp_clicked:
            import tempfile

            ss.pop("map_import_dup_of", None)  # an earlier duplicate's notice is about another import

            shown = None  # how an uploaded file is named in messages (not by the temporary folder it passes through)
            try:
                with st.spinner("Importing…"), tempfile.TemporaryDirectory() as tmp:
                    src = (check_server_path(imp_path.strip(), "import path") if imp_path.strip()
                           else Path(tmp) / Path(imp_file.name).name)
                    if not imp_path.strip():
                        src.write_bytes(imp_file.getvalue())
                        shown = (str(src), f"uploaded file {Path(imp_file.name).name}")
                    new_scene, imp_msg = import_imagery(ws, src, name=imp_name.strip() or None, zoom=int(imp_zoom),
                                                        source=shown[1] if shown else None, allow_duplicate=again)
                ss["map_import_msg"] = imp_msg
                ss["map_scene"] = new_scene.id
                ss["map_import_dup_used"] = again
                st.rerun()
            except DuplicateImportError as e:
                ss["map_import_msg"] = None
                ss["map_import_dup_of"] = (e.scene_id, e.scene_name, str(e))
            except (SegHZError, OSError, ValueError) as e:
                text = str(e) if shown is None else str(e).replace(shown[0], shown[1])
                st.error(f"Import failed: {redact_secrets(text)}")
        dup = ss.get("map_import_dup_of")
        if dup:
            st.warning(redact_secrets(dup[2]))
            if st.button(f"Open scene '{dup[1]}'", key="map_import_open_dup"):
                ss.pop("map_import_dup_of", None)
                ss["map_scene"] = dup[0]
                st.rerun()
        if ss.get("map_import_msg"):
            st.success(ss["map_import_msg"])


def fetch_panel(ws: Any, scene: Any, info: Any, region: dict | None) -> None:
    """The "Fetch imagery" expander: source, zoom and box (by default the drawn ``region`` or the scene, when it is
    georeferenced), the tile estimate, the button that starts the fetch job, and the latest fetch jobs."""
    sid = scene.id
    located = bool(getattr(info, "georeferenced", False))  # a pixel-space scene (e.g. an aligned one) has no place
    with st.expander("Fetch imagery for this area (online, as a background job)" if located
                     else "Fetch imagery of a new area (online, as a background job)"):
        st.caption("Downloads map tiles over a WGS-84 box into a GeoTIFF in the workspace and imports it as a new "
                   "scene (tile cache, retries, polite rate limit; missing tiles are skipped and reported). Needs "
                   "internet.")
        if not located:
            st.info(f"Scene '{scene.name}' is in pixel space: it has no location on the Earth, so there is no area of "
                    "it to fetch. A WGS-84 box typed here fetches a separate, georeferenced scene that has nothing "
                    "to do with this one (it is not aligned to it).")
        sources = fetch_sources()
        f1, f2 = st.columns([2, 1])
        src_key = f1.selectbox("Source", list(sources), format_func=lambda k: sources[k].label, key="map_fetch_src")
        src = sources[src_key]
        url = src.url
        if src.custom:
            url = f1.text_input("Tile URL template", key="map_fetch_url", placeholder="https://…/{z}/{x}/{y}.png",
                                help="{z} {x} {y} and optionally {s} (subdomain); for Baidu: its tile ids (BD-09).")
        zoom = int(f2.number_input("Zoom level", 1, 21, min(17, src.max_zoom), key="map_fetch_zoom"))
        default_box = fetch_bbox_default(region, info) if located else None  # never from pixel coordinates
        box_txt = st.text_input("Box W,S,E,N (WGS-84 degrees)", value=", ".join(f"{v:.6f}" for v in default_box)
                                if default_box else "", key=f"map_fetch_bbox_{sid}",
                                placeholder="west, south, east, north in degrees, e.g. 120.150, 30.250, 120.160, 30.260",
                                help="Defaults to the drawn region (or the scene) when the scene is georeferenced; "
                                     "empty for a pixel-space scene, which has no location.")
        plan, config = None, None
        try:
            if not url:
                raise ValueError("give a tile URL template")
            if not box_txt.strip():  # nothing typed yet: a hint, not an error
                st.caption("Type the box to fetch as W, S, E, N in WGS-84 degrees to see the tile estimate.")
            else:
                box = parse_bbox(box_txt)
                plan = (plan_baidu if src.baidu else plan_xyz)(box, zoom)
                config = {"url": url, "bbox": list(box), "zoom": zoom, "baidu": src.baidu, "key_env": src.key_env,
                          "subdomains": list(src.subdomains) or None, "name": f"{src.label} z{zoom}"}
        except (SegHZError, ValueError) as e:
            st.caption(f"Not ready: {redact_secrets(str(e))}")
        if plan is not None:
            st.caption(f"Estimate: {plan.describe()}")
            if not fetch_size_ok(plan, (src_key, url, zoom, box_txt)):
                config = None
        if st.button("Fetch as a background job", key="map_fetch_go", disabled=config is None) and config is not None:
            from seghz.jobs.runner import submit_job

            try:
                jid = submit_job(ws, "fetch", config)
                st.success(f"Fetch job {jid} started; the new scene appears in the scene list when it is done.")
            except (SegHZError, ValueError, OSError) as e:
                st.error(f"Could not start the fetch: {redact_secrets(str(e))}")
        for j in [j for j in ws.list_jobs(limit=20) if j.kind == "fetch"][:3]:
            res = j.result or {}
            st.caption(f"`{j.id}` · {j.status} · {100 * float(j.progress or 0):.0f} %"
                       + (f" · scene `{res['scene_id']}`: {res.get('where', '')}" if res.get("scene_id") else "")
                       + (f" · {redact_secrets(j.message.strip().splitlines()[-1][:200])}"
                          if j.status in ("failed", "died") and j.message else ""))


def fetch_size_ok(plan: Any, what: tuple) -> bool:
    """Whether a fetch of ``plan`` (:func:`seghz.geo.fetch.plan_xyz` / ``plan_baidu``) may be queued: up to
    ``LARGE_FETCH_TILES`` tiles it may; above, a warning with its tiles, download and mosaic size and a confirmation
    checkbox (unticked again when ``what``, the source, zoom and box, changes); above the fetch job's cap
    ``FETCH_JOB_MAX_TILES``, an error naming the cap and the way out, and never."""
    ss = st.session_state
    n = plan.tiles
    if n <= LARGE_FETCH_TILES:
        return True
    size = (f"{n:,} tiles at {'Baidu level' if isinstance(plan, BaiduPlan) else 'zoom'} {plan.zoom}, about "
            f"{plan.bytes_estimate / 1e6:,.0f} MB to download and a mosaic of about {plan.pixels / 1e6:,.0f} Mpx")
    if n > FETCH_JOB_MAX_TILES:
        st.error(f"This box is too large to fetch: {size}, over the cap of {FETCH_JOB_MAX_TILES:,} tiles per fetch. "
                 "Choose a lower zoom level (each level down needs about a quarter of the tiles) or a smaller box.")
        return False
    st.warning(f"A large fetch: {size}. At the polite request rate it takes a while; a lower zoom level or a smaller "
               "box is quicker.")
    if ss.get("map_fetch_confirm_for") != what:  # another box, zoom or source: confirm that one again
        ss.pop("map_fetch_confirm", None)
        ss["map_fetch_confirm_for"] = what
    return st.checkbox(f"Yes, fetch all {n:,} tiles (about {plan.bytes_estimate / 1e6:,.0f} MB)",
                       key="map_fetch_confirm")


__all__ = ["fetch_panel", "fetch_size_ok", "import_panel"]

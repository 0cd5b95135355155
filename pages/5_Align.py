"""Align: co-register a label map with imagery (the seed's NBBs step) and save the aligned pair as a scene.

Manual control points (clicked on the two images, or typed in a table: label px -> image px, with a live residual
per point and the RMSE of the chosen transform kind) or automatic matching (``seghz.geo.align.auto_align``); before/after overlays; "Save as aligned
label scene" imports the image and the warped label through ``seghz.data.scenes.import_scene`` with the
transform, method and RMSE recorded (``alignment.json`` in the scene folder). The work is in
``seghz.geo.align`` / ``seghz.geo.align_scene``.
"""
from __future__ import annotations

import io
import os
from collections import Counter

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from seghz.classes import crosswalk_path, get_scheme, scheme_names
from seghz.data.io import read_label
from seghz.errors import SegHZError
from seghz.geo import align as A
from seghz.geo.align_scene import (
    before_after,
    canvas_points,
    default_airport_files,
    find_aligned_scene,
    import_aligned_scene,
    load_pair,
    load_points,
    parse_points,
)
from seghz.security import check_server_path
from ui import align_page as AP
from ui.common import canvas, page_header, scheme_legend_html, screen_scheme

ws = page_header("Align", "Co-register a label map with imagery: control points or automatic matching, then save "
                          "the aligned label with the image as a scene.")
ss = st.session_state
COLS = ["label_x", "label_y", "image_x", "image_y"]
AUTO_KEY = "al_auto"  # the automatic-matching result, a plain session key: it outlives visits to other pages
SAVED_KEY = "al_saved_msg"  # "Saved scene …", shown by the run after the save (which redraws the sidebar)
defaults = default_airport_files()


def expected_scheme(names: list[str]) -> tuple[str, str]:
    """(scheme, where it comes from): the active checkpoint's scheme, else the workspace's most common scene scheme,
    else hz20. An hz7 label read as hz20 showed the hz20 legend and was saved as an hz20 scene."""
    active = ws.active_checkpoint()
    if active is not None and active.scheme in names:
        return active.scheme, f"the scheme of the active model {active.name or active.id}"
    counts = Counter(s.scheme for s in ws.list_scenes() if s.scheme in names)
    if counts:
        name, n = counts.most_common(1)[0]  # a tie: the first scene's (by id) scheme
        return name, f"the scheme of {n} of the workspace's {sum(counts.values())} scene(s)"
    return ("hz20" if "hz20" in names else names[0]), "no model or scene in the workspace yet"


def save_schemes(scheme: str, names: list[str]) -> list[str]:
    """The schemes a ``scheme`` label can be saved in: itself and every scheme it crosswalks to (hz20 -> hz14,
    hz11, hz7)."""
    return [scheme] + [n for n in names if n != scheme and crosswalk_path(scheme, n) is not None]


def save_default(scheme: str, targets: list[str]) -> str:
    """The active model's scheme when the label crosswalks to it (the review: an hz20 label saved as hz20 could not
    be scored against the hz7 model), else the label's own."""
    active = ws.active_checkpoint()
    return active.scheme if active is not None and active.scheme in targets else scheme


@st.cache_data(max_entries=16, show_spinner=False)
def readable_as(path: str, stamp: tuple[int, int], names: tuple[str, ...]) -> tuple[str, ...]:
    """The schemes of ``names`` under which the label file decodes (each value one of the scheme's classes or
    unlabelled); ``stamp`` (modification time, size) renews the answer when the file changes."""
    ok = []
    for n in names:
        try:
            read_label(path, get_scheme(n))
        except (SegHZError, ValueError, KeyError, OSError):
            continue
        ok.append(n)
    return tuple(ok)


def file_stamp(path: str) -> tuple[int, int] | None:
    """(modification time, size) of a file, None when it cannot be read: a changed file is another input."""
    try:
        st_ = os.stat(path)
    except OSError:
        return None
    return st_.st_mtime_ns, st_.st_size


def schemes_reading(path: str) -> tuple[str, ...]:
    try:
        st_ = os.stat(path)
    except OSError:
        return ()
    return readable_as(path, (st_.st_mtime_ns, st_.st_size), tuple(names))


def label_fits(path: str) -> tuple[str, ...]:
    """The schemes the label file reads in; () for a path outside SEGHZ_IMPORT_ROOTS (never read: the check below
    says why) or a file that cannot be read."""
    if not path:
        return ()
    try:
        check_server_path(path, "label file")
    except SegHZError:
        return ()
    return schemes_reading(path)


c1, c2, c3 = st.columns([4, 4, 2])
AP.keep("al_label", str(defaults[0]) if defaults else "")
label_path = c1.text_input("Label file (palette RGB or id mask)", key="al_label")
AP.remember("al_label")
AP.keep("al_image", str(defaults[1]) if defaults else "")
image_path = c2.text_input("Imagery (PNG / JPEG / GeoTIFF)", key="al_image")
AP.remember("al_image")
names = scheme_names()
expected, expected_why = expected_scheme(names)
label_reads = label_fits(label_path.strip())
start_scheme = AP.default_scheme(expected, label_reads, lambda n: get_scheme(n).num_classes)
if ss.get(AP.SCHEME_CHOSEN) == label_path.strip():  # chosen by hand for this label: kept (also across pages)
    AP.keep("al_scheme", start_scheme, options=names)
else:  # the default follows the label: the scheme it reads in when it does not read in the expected one
    ss["al_scheme"] = start_scheme
why_start = (f"{expected}: {expected_why}" if start_scheme == expected else
             f"{start_scheme}, the scheme this label reads in (it does not read as {expected}, {expected_why})")
scheme = c3.selectbox("Label scheme", names, key="al_scheme", on_change=AP.scheme_picked,
                      help=f"The classes the label's colours or ids stand for; the saved scene gets this scheme. "
                           f"Defaults to {why_start}.")
AP.remember("al_scheme")
if not label_path.strip() or not image_path.strip():  # spaces only = not given (stripped to "", it was read as the folder ".")
    st.info("Give a label file and an image (local paths).")
    st.stop()
try:
    for _p, _what in ((label_path, "label file"), (image_path, "imagery file")):
        check_server_path(_p.strip(), _what)  # SEGHZ_IMPORT_ROOTS, before anything is read
except SegHZError as e:
    st.error(str(e))
    st.stop()
try:
    label, image = load_pair(label_path.strip(), image_path.strip(), scheme)
except SegHZError as e:
    msg = str(e)
    fits = schemes_reading(label_path.strip())
    if fits and scheme not in fits:  # the label's values are not all classes of the chosen scheme; others fit
        fits = sorted(fits, key=lambda n: (n != expected, get_scheme(n).num_classes))
        msg += (f"\n\nThis label is not a {scheme} label: it reads as {' or '.join(fits)}. Choose "
                f"{'that' if len(fits) == 1 else 'one of those'} under “Label scheme”.")
    st.error(msg)
    st.stop()
fits = schemes_reading(label_path.strip())
coarser = sorted((n for n in fits if n != scheme and get_scheme(n).num_classes < get_scheme(scheme).num_classes
                  and set(get_scheme(n).colors) <= set(get_scheme(scheme).colors)),
                 key=lambda n: get_scheme(n).num_classes)  # same colours, fewer classes: hz7 within hz20
if scheme != expected and expected in fits:
    st.warning(f"This label also reads as {expected} ({expected_why}). Read as {scheme}, its classes get {scheme}'s "
               f"names and legend, and it is saved as a {scheme} scene. If it is a {expected} label, choose "
               f"{expected} under “Label scheme”.")
elif coarser:
    st.caption(f"Every value in this label is also a class of {coarser[0]} (the same colours, fewer classes): if it "
               f"is a {coarser[0]} label, choose {coarser[0]} under “Label scheme”, or it is saved as a {scheme} "
               "scene.")
pair = (label_path.strip(), image_path.strip(), scheme, file_stamp(label_path.strip()), file_stamp(image_path.strip()))
if ss.get("al_pair") != pair:  # another pair (or a file changed): forget the previous automatic result
    ss["al_pair"] = pair
    ss.pop(AUTO_KEY, None)

# Drawn in the session's screen palette (sidebar "Class colours") like the other pages; the saved scene's label
# and the CLI's overlay file keep the study's colours.
dscheme = screen_scheme(scheme)
label_rgb = dscheme.colorize(label)
present = set(np.unique(label).tolist())
legend = scheme_legend_html(scheme, names=[n for i, n in enumerate(dscheme.names) if i in present])  # screen colours
AP.keep("al_click", False)
clicking = st.toggle("Click control points on the two images", key="al_click",
                     help="Click a feature on the label, then the same feature on the image; repeat. Pairs are "
                          "matched in click order; press “Add the clicked pairs” to put them in the table.")
AP.remember("al_click")
a, b = st.columns(2)
clicked = {}
if clicking:
    gen = ss.get("al_click_gen", 0)
    # clicked points not yet added are kept per pair (not the scheme: it only recolours the label) and shown again by
    # a canvas that comes back: from another page, the toggle turned off and on, a new size
    pkey = AP.pair_key(label_path, image_path, pair[3], pair[4])
    restored = {}
    with a:  # the two columns are equally wide: the canvases fit them (no horizontal scroll)
        click_width = AP.column_width() or AP.FALLBACK_WIDTH
    for col, name, arr in ((a, "label", label_rgb), (b, "image", image)):
        h, w, sc = AP.canvas_size(arr.shape, click_width)
        buf = io.BytesIO()
        Image.fromarray(arr).resize((w, h), Image.BILINEAR).save(buf, format="JPEG", quality=90)
        ckey = AP.canvas_key(name, pkey, gen, (h, w))  # another pair, resized, added/cleared: a new canvas
        fresh = ckey not in ss
        drawing = AP.initial_drawing(ss, ckey, pkey, name, sc)
        with col:
            out = canvas(drawing_mode="point", point_display_radius=int(AP.POINT_STYLE["radius"]),
                         stroke_width=int(AP.POINT_STYLE["strokeWidth"]), stroke_color=AP.POINT_STYLE["stroke"],
                         fill_color=AP.POINT_STYLE["fill"],
                         background_image=buf.getvalue(), height=h, width=w, update_streamlit=True,
                         initial_drawing=drawing, key=ckey)
        json_data = getattr(out, "json_data", None)
        clicked[name] = canvas_points(drawing if json_data is None else json_data, sc)
        AP.keep_pending(ss, pkey, name, clicked[name])
        restored[name] = AP.restored_count(ss, name, ckey, drawing if fresh else None)
        col.caption(f"{name}: {len(clicked[name])} point(s) clicked")
    n_pairs = min(len(clicked["label"]), len(clicked["image"]))
    if any(restored.values()):
        st.caption(f"Restored the points you clicked here before ({restored['label']} on the label, "
                   f"{restored['image']} on the image) and had not added to the table yet. “Clear the clicked points” "
                   "removes them.")
    ca, cc = st.columns(2)
    add = ca.button(f"Add the {n_pairs} clicked pair(s)", key="al_click_add", disabled=n_pairs == 0)
    clear = cc.button("Clear the clicked points", key="al_click_clear",
                      disabled=not (len(clicked["label"]) or len(clicked["image"])),
                      help="Remove every point clicked on the two images and not yet added to the table.")
    if add:
        cur = ss.get("al_points", pd.DataFrame(columns=COLS, dtype=float))
        new = pd.DataFrame(np.c_[clicked["label"][:n_pairs], clicked["image"][:n_pairs]], columns=COLS)
        ss["al_points"] = pd.concat([cur, new], ignore_index=True)
        ss["al_editor_gen"] = ss.get("al_editor_gen", 0) + 1
    if add or clear:  # consumed: never restored (nor added) again; new, empty canvases
        AP.drop_pending(ss, pkey)
        ss["al_click_gen"] = gen + 1
        st.rerun()
else:
    a.image(label_rgb, caption=f"label {label.shape[1]}×{label.shape[0]} px", width="stretch")
    b.image(image, caption=f"image {image.shape[1]}×{image.shape[0]} px", width="stretch")
st.markdown(legend, unsafe_allow_html=True)

AP.keep("al_kind", list(A.KINDS)[2], options=A.KINDS)
kind = st.radio("Transform", list(A.KINDS), horizontal=True, key="al_kind",
                help="similarity: scale+rotation+shift (≥2 points); affine: +shear (≥3); homography: +perspective (≥4)")
AP.remember("al_kind")

# --------------------------------------------------------------------------------------------- control points
st.subheader("Control points")
pc1, pc2 = st.columns([5, 1])
AP.keep("al_points_path", "")
pts_path = pc1.text_input("Load control points (JSON: label_xy → image_xy, or CSV) from a file on the server",
                          key="al_points_path")
AP.remember("al_points_path")
if pc2.button("Load", key="al_points_load") and pts_path.strip():
    try:
        src, dst, _ = load_points(check_server_path(pts_path.strip(), "control-points file"))
        ss["al_points"] = pd.DataFrame(np.c_[src, dst], columns=COLS)
        ss["al_editor_gen"] = ss.get("al_editor_gen", 0) + 1
    except SegHZError as e:
        st.error(str(e))
upload = st.file_uploader("… or upload a control-points file: JSON (as above) or CSV with the columns "
                          f"{', '.join(COLS)} (the table's), or four numbers a row", type=["json", "csv"],
                          key="al_points_upload")
if upload is None:
    ss.pop("al_upload_seen", None)
    ss.pop("al_upload_msg", None)
else:
    fid = getattr(upload, "file_id", None) or (upload.name, upload.size)
    if ss.get("al_upload_seen") != fid:  # read each uploaded file once (a rerun must not undo later table edits)
        ss["al_upload_seen"] = fid
        try:
            src, dst, _ = parse_points(upload.getvalue(), f"uploaded file {upload.name}")
            ss["al_points"] = pd.DataFrame(np.c_[src, dst], columns=COLS)
            ss["al_editor_gen"] = ss.get("al_editor_gen", 0) + 1
            ss["al_upload_msg"] = ("success", f"Loaded {len(src)} control point(s) from {upload.name} into the table.")
        except SegHZError as e:
            ss["al_upload_msg"] = ("error", f"Not loaded: {e}")
    level, text = ss.get("al_upload_msg") or (None, None)
    if level == "error":
        st.error(text)
    elif level:
        st.success(text)
editor_gen = ss.get("al_editor_gen", 0)
editor_key = f"al_editor_{editor_gen}"
kept_edits = ss.get("al_points_edited")
if editor_key not in ss and kept_edits is not None and kept_edits[0] == editor_gen:
    ss["al_points"] = kept_edits[1]  # back from another page: the editor's own edits were forgotten, not these
pts = ss.get("al_points", pd.DataFrame(columns=COLS, dtype=float))
edited = st.data_editor(pts, num_rows="dynamic", key=editor_key, width="stretch",
                        column_config={c: st.column_config.NumberColumn(c, format="%.1f") for c in COLS})
ss["al_points_edited"] = (editor_gen, edited[COLS].copy())
rows = edited[COLS].apply(pd.to_numeric, errors="coerce").dropna()
src, dst = rows[["label_x", "label_y"]].to_numpy(float), rows[["image_x", "image_y"]].to_numpy(float)
M_manual = None
if len(rows):
    try:
        M_manual = A.fit_transform(src, dst, kind)
    except ValueError as e:  # one message: what is wrong and what to do (no second "add control points" below)
        st.warning(f"No manual fit yet: {e}. Add control points, or choose a transform that needs fewer "
                   "(similarity ≥ 2, affine ≥ 3, homography ≥ 4 point pairs), or run automatic matching below.")
if M_manual is not None:
    res = A.residuals(M_manual, src, dst)
    loo = A.holdout_rmse(src, dst, kind)[0] if len(src) > A.MIN_POINTS[kind] else float("nan")
    before = A.rmse(A.resize_transform(label.shape, image.shape), src, dst)
    st.markdown(f"**Manual {kind}: RMSE {A.rmse(M_manual, src, dst):.2f} px** on {len(src)} points · leave-one-out "
                f"{'n/a' if np.isnan(loo) else f'{loo:.2f} px'} · plain resize {before:.2f} px")
    st.dataframe(pd.DataFrame({**{c: rows[c].to_numpy() for c in COLS}, "residual_px": np.round(res, 2)}),
                 width="stretch", hide_index=True)

# ------------------------------------------------------------------------------------------------ automatic
st.subheader("Automatic matching")
AP.keep("al_local", False)
local = st.checkbox("Local (non-rigid) refinement", key="al_local",
                    help="on top of the global transform: a smooth displacement field fitted to automatic window "
                         "matches (its smoothing chosen by cross-validation on those matches, never on your "
                         "control points). For label maps that were digitised with local distortions; +5–15 s.")
AP.remember("al_local")
if st.button("Automatic matching", key="al_auto_btn", help="coarse scale/rotation search, features, ECC and local windows"):
    bar = st.progress(0.0, "starting")
    try:
        r = A.auto_align(label, image, kind=kind, progress=lambda f, m: bar.progress(min(1.0, f), m),
                         local="local" if local else None)
        ss[AUTO_KEY] = {"M": r.M, "T": r.transform, "kind": kind, "method": r.method, "score": r.score,
                         "seconds": r.seconds, "inliers": r.inliers, "note": r.local_note,
                         "score_resize": A.match_score(label, image, A.resize_transform(label.shape, image.shape))}
    except (ValueError, SegHZError) as e:
        st.error(f"Automatic matching failed: {e}")
    bar.empty()
auto = ss.get(AUTO_KEY)
if auto:
    msg = f"Automatic ({auto['kind']}): {auto['method']}, score {auto['score']:.3f}, {auto['seconds']:.1f} s"
    if len(src):
        msg += f" · **RMSE on the {len(src)} control points {A.rmse(auto['T'], src, dst):.2f} px**"
        if isinstance(auto["T"], A.LocalWarp):
            msg += f" (global {auto['kind']} alone: {A.rmse(auto['M'], src, dst):.2f} px)"
    st.markdown(msg)
    base = auto.get("score_resize")
    st.caption("Score: the share of the image's grey-level variance that the aligned label's classes explain (each "
               "class painted with its mean grey level, correlated with the image over the overlap) — 0 to 1, "
               "higher is better"
               + (f"; the plain resize scores {base:.3f}" if base is not None and base >= 0 else "")
               + ". It also depends on how distinct the classes look in the image, so compare scores of the same "
               "pair only; −1 means the label covers under 5 % of the image."
               + (" It is the global transform's score (the local field is checked by cross-validation below)."
                  if isinstance(auto["T"], A.LocalWarp) else ""))
    if auto.get("note"):
        st.warning(auto["note"])
    if isinstance(auto["T"], A.LocalWarp):
        inf = auto["T"].info
        cv = inf.get("cv") or {}
        st.caption(f"Local field: {inf.get('inliers')} of {inf.get('correspondences')} window matches kept, "
                   f"{inf.get('estimator')} smoothing σ {inf.get('sigma_px')} px (cross-validated on the matches: "
                   f"held-out error {cv.get('cv_rmse_px')} px vs {cv.get('cv_rmse_global_px')} px for the global "
                   f"transform alone), largest displacement {inf.get('max_displacement_px')} px, "
                   f"{inf.get('seconds')} s. Leave-one-out on control points does not apply: the field never "
                   f"sees them.")

# ------------------------------------------------------------------------------------------------- result
choices = (["manual fit"] if M_manual is not None else []) + (["automatic"] if auto else [])
if not choices:
    if not len(rows):  # with points that cannot be fitted yet, the warning above already says what to do
        st.info("Add control points (at least 2 / 3 / 4 for similarity / affine / homography) or run automatic "
                "matching.")
    st.stop()
AP.keep("al_use", choices[0], options=choices)
use = st.radio("Use", choices, horizontal=True, key="al_use")
AP.remember("al_use")
M = M_manual if use == "manual fit" else auto["T"]
use_kind = kind if use == "manual fit" else auto["kind"]
method = f"manual ({len(src)} control points)" if use == "manual fit" else f"automatic: {auto['method']}"
AP.keep("al_opacity", 0.45)
opacity = st.slider("Label opacity", 0.0, 1.0, step=0.05, key="al_opacity")
AP.remember("al_opacity")
bef, aft = before_after(label, image, M, dscheme, opacity)
o1, o2 = st.columns(2)
o1.image(bef, caption="before: label stretched onto the image (plain resize)", width="stretch")
o2.image(aft, caption=f"after: {method}", width="stretch")
st.markdown(legend, unsafe_allow_html=True)
M3 = M.M if isinstance(M, A.LocalWarp) else M
st.caption("Matrix (label px → image px): " + "; ".join(" ".join(f"{v:.6g}" for v in row) for row in M3)
           + (" + local displacement field (saved in alignment.json)" if M3 is not M else ""))

n1, n2, n3 = st.columns([3, 2, 1])
AP.keep("al_name", f"{image_path.strip().rsplit('/', 1)[-1].rsplit('.', 1)[0]} aligned", context=image_path.strip())
name = n1.text_input("Scene name", key="al_name",
                     help="A name another scene already has gets a number, e.g. “… (2)”, so the scene pickers can "
                          "tell them apart.")
AP.remember("al_name", image_path.strip())
targets = save_schemes(scheme, names)
AP.keep("al_target_scheme", save_default(scheme, targets), options=targets, context=scheme)
save_as = n2.selectbox("Save the label as", targets, key="al_target_scheme",
                       format_func=lambda n: n + (" (as drawn)" if n == scheme else f" (crosswalked from {scheme})"),
                       help="The scene's label scheme. The active model predicts its own scheme: a label in another "
                            "one cannot be scored or corrected against it (the alignment record keeps the drawn "
                            "scheme).")
AP.remember("al_target_scheme", scheme)
AP.keep("al_split", "none", options=["none", "train", "val", "test"])
split = n3.selectbox("Split", ["none", "train", "val", "test"], key="al_split",
                     help="none: neither trained on nor scored until you move it (Home, Scenes). train: the next "
                          "retrain learns from it. val / test: the yardstick.")
AP.remember("al_split")


def save_scene() -> None:
    rm = A.rmse(M, src, dst) if len(src) else None
    loo = A.holdout_rmse(src, dst, use_kind)[0] if use == "manual fit" and len(src) > A.MIN_POINTS[use_kind] else None
    try:
        sc = import_aligned_scene(ws, label_path.strip(), image_path.strip(), M, scheme=scheme, name=name, kind=use_kind,
                                  method=method, rmse=rm, n_points=len(src), holdout_rmse=loo, label=label,
                                  target_scheme=None if save_as == scheme else save_as, split=split)
        ss.pop("al_dup", None)
    except (ValueError, SegHZError) as e:
        st.error(f"Not saved: {e}")
        return
    # the sidebar (scene counts, what is synthetic) was drawn before the save: draw the page again, message kept
    ss[SAVED_KEY] = f"Saved scene '{sc.name}' ({sc.id}): the image with the aligned label; provenance in alignment.json."
    st.rerun()


def same_as(scene_ids=None):
    return find_aligned_scene(ws, label_path.strip(), image_path.strip(), M, scheme=scheme, label_shape=label.shape,
                              scene_ids=scene_ids)


found = None
if st.button("Save as aligned label scene", type="primary", key="al_save"):
    found = same_as()
    if found is None:
        save_scene()
    else:  # the same alignment again would only make an indistinguishable copy: say so, offer to open it
        ss["al_dup"] = found.id
if ss.get(SAVED_KEY):  # the save's message, shown once by the run after it
    st.success(ss.pop(SAVED_KEY))
dup_id = ss.get("al_dup")
# still this alignment (not another pair, points or transform)? Just found on Save: no second search
dup = found if found is not None else (same_as({dup_id}) if dup_id else None)
if dup_id and dup is None:
    ss.pop("al_dup", None)
if dup is not None:
    notice = st.container()  # filled below unless "Save another copy anyway" was just pressed
    k1, k2, k3 = st.columns(3)
    if k1.button("Open it on the Labels page", key="al_dup_labels"):
        ss.pop("al_dup", None)
        ss["lbl_scene"] = dup.id
        st.switch_page("pages/3_Labels.py")
    if k2.button("Open it on the Map page", key="al_dup_map"):
        ss.pop("al_dup", None)
        ss["map_scene"] = dup.id
        st.switch_page("pages/1_Map.py")
    if k3.button("Save another copy anyway", key="al_dup_save",
                 help="A new scene with the same content, named distinctly (e.g. “… (2)”)."):
        with notice:
            save_scene()
    else:
        notice.warning(f"This alignment is already saved as scene '{dup.name}' ({dup.id}, created "
                       f"{dup.created_at[:19].replace('T', ' ')} UTC): same image, label and transform. Nothing new "
                       "was saved.")

"""Streamlit glue shared by the pages: the workspace, cached predictors, progress bars, legends, the page header.

Pages stay thin: they lay out widgets and call seghz functions; anything numeric lives in ``seghz/``.

Environment:
    SEGHZ_WORKSPACE   workspace folder (default ``./workspace``).
    SEGHZ_NO_DEMO=1   do not create the synthetic demo scenes nor register the shipped checkpoints of
                      ``./checkpoints`` (tests use this with a small prepared workspace).
"""
from __future__ import annotations

import html
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from seghz.classes import Scheme, get_scheme
from seghz.store import Workspace

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CHECKPOINTS = REPO_ROOT / "checkpoints"
ANALYST_KEY = "seghz_analyst"


def workspace_root() -> Path:
    """The workspace folder this app uses: ``$SEGHZ_WORKSPACE`` or ``./workspace`` (resolved)."""
    return Path(os.environ.get("SEGHZ_WORKSPACE") or "workspace").expanduser().resolve()


def demo_disabled() -> bool:
    """True when ``$SEGHZ_NO_DEMO`` is set to a true value (1/true/yes)."""
    return os.environ.get("SEGHZ_NO_DEMO", "").strip().lower() in ("1", "true", "yes")


@st.cache_resource(show_spinner=False)
def _open_workspace(root: str) -> Workspace:
    return Workspace(root)


_PREPARED: set[str] = set()
_PREPARE_LOCK = threading.Lock()


def _prepare_demo(ws: Workspace) -> None:
    """Run ensure_demo_workspace once per folder and server process (serialised between sessions)."""
    root = str(ws.root)
    if root in _PREPARED:
        return
    with _PREPARE_LOCK:
        if root in _PREPARED:
            return
        from seghz.data.scenes import ensure_demo_workspace

        try:
            if ws.list_scenes():
                ensure_demo_workspace(ws, SHIPPED_CHECKPOINTS)  # only registers new shipped checkpoints
            else:
                with st.spinner("Preparing the workspace: creating the synthetic demo scenes (first start only)…"):
                    ensure_demo_workspace(ws, SHIPPED_CHECKPOINTS)
        except Exception as e:  # noqa: BLE001 - a broken shipped file must not take the whole app down
            st.warning(f"Could not fully prepare the demo workspace in {root}: {e}")
        _PREPARED.add(root)


@st.cache_resource(show_spinner=False)
def _register_shipped(root: str, signature: tuple) -> None:
    from seghz.data.scenes import register_shipped_checkpoints

    register_shipped_checkpoints(Workspace(root), SHIPPED_CHECKPOINTS)


def _shipped_signature() -> tuple:
    try:
        return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in SHIPPED_CHECKPOINTS.glob("*.safetensors")))
    except OSError:
        return ()


def get_workspace() -> Workspace:
    """The app's :class:`Workspace` (one per folder and server process).

    On first use of a folder it runs :func:`seghz.data.scenes.ensure_demo_workspace` (with a spinner), so a
    fresh clone shows the synthetic demo within seconds; checkpoints that appear in ``./checkpoints`` later
    (e.g. a demo model finishing training) are registered on the next rerun. Both are skipped when
    ``$SEGHZ_NO_DEMO=1``.
    """
    root = str(workspace_root())
    with_demo = not demo_disabled()
    ws = _open_workspace(root)
    if with_demo:
        _prepare_demo(ws)
        sig = _shipped_signature()
        if sig:
            try:
                _register_shipped(root, sig)
            except Exception as e:  # noqa: BLE001
                st.sidebar.warning(f"Could not register the shipped checkpoints: {e}")
    return ws


@st.cache_resource(show_spinner="Loading the model…", max_entries=3)
def get_predictor(checkpoint_path: str, mtime: float) -> tuple[Any, dict]:
    """``(Predictor, metadata)`` for a checkpoint file; cached per (path, modification time)."""
    from seghz.infer.engine import Predictor

    return Predictor.from_checkpoint(checkpoint_path)


def predictor_for(ws: Workspace, checkpoint_id: str) -> tuple[Any, dict]:
    """The cached ``(Predictor, metadata)`` of a workspace checkpoint."""
    path = ws.checkpoint_path(checkpoint_id)
    return get_predictor(str(path), path.stat().st_mtime)


@st.cache_data(show_spinner=False, max_entries=8)
def _review_noise(root: str, split: str, scheme: str, data_version: str):
    from seghz.review.noise_matrix import review_noise

    return review_noise(_open_workspace(root), split, scheme)


def review_noise_for(ws: Workspace, split: str, scheme: str):
    """:func:`seghz.review.noise_matrix.review_noise`, counted once per version of the split's labels (it reads
    every reviewed scene's labels, and the Train page shows it on every rerun)."""
    return _review_noise(str(ws.root), split, scheme, ws.data_version(split))


def progress_callback(bar) -> Callable[[float, str], None]:
    """Adapt an ``st.progress`` element to seghz's ``progress(fraction, message)`` callbacks."""

    def update(fraction: float, message: str = "") -> None:
        try:
            f = min(1.0, max(0.0, float(fraction)))
        except (TypeError, ValueError):
            f = 0.0
        bar.progress(f, text=message or None)

    return update


def scheme_legend_html(scheme: Scheme | str, names: list[str] | None = None, screen: bool = True) -> str:
    """HTML of coloured legend chips for a scheme's classes (for ``st.markdown(..., unsafe_allow_html=True)``), in
    the session's screen palette (:func:`screen_scheme`); ``screen=False`` for a layer's own colours (the
    confidence ramp, the error layer), which are drawn as they are."""
    sch = screen_scheme(scheme) if screen else (get_scheme(scheme) if isinstance(scheme, str) else scheme)
    chips = []
    for name, color in zip(sch.names, sch.hex_colors()):
        if names is not None and name not in names:
            continue
        chips.append(
            "<span style='display:inline-flex;align-items:center;margin:0 10px 4px 0;white-space:nowrap'>"
            f"<span style='display:inline-block;width:14px;height:14px;border-radius:3px;background:{color};"
            "border:1px solid rgba(0,0,0,.35);margin-right:5px'></span>"
            f"<span style='font-size:0.88em'>{html.escape(name)}</span></span>"
        )
    return f"<div style='display:flex;flex-wrap:wrap;line-height:1.6'>{''.join(chips)}</div>"


ANALYST_KEPT = "seghz_analyst_kept"  # a plain session key (no widget): survives what drops a widget's state
ANALYST_COOKIE = "seghz_analyst"  # the browser remembers the name across reloads and new tabs (30 days)
ANALYST_COOKIE_DAYS = 30
_COOKIE_WRITTEN = "seghz_analyst_cookie"  # the name this session last wrote into the cookie
_REMEMBERED = "seghz_analyst_remembered"  # True while the name shown came from the cookie, unchanged
_ANALYST_PAGE = "seghz_analyst_page"  # the page whose sidebar box last showed the name


def remembered_analyst(cookies: Any) -> str:
    """The analyst name this browser remembers (the ``seghz_analyst`` cookie, URL-encoded), or "" when there is
    none or it could not be recorded with an edit (:func:`analyst_problem`: too long, control characters)."""
    from urllib.parse import unquote

    try:
        raw = cookies.get(ANALYST_COOKIE) if cookies is not None else None
    except (AttributeError, KeyError, RuntimeError):  # no browser behind this session (a test harness)
        return ""
    name = unquote(str(raw or "")).strip()
    return name if name and analyst_problem(name) is None else ""


def analyst_cookie_script(name: str) -> str:
    """A ``<script>`` that makes this browser remember ``name`` (or forget it, for "") for
    :data:`ANALYST_COOKIE_DAYS` days: a first-party, SameSite=Strict cookie of this server only."""
    import json

    age = ANALYST_COOKIE_DAYS * 86400 if name else 0
    value = json.dumps(name).replace("<", "\\u003c").replace(">", "\\u003e")  # a JS string; never ends the tag
    return (f"<script>document.cookie = '{ANALYST_COOKIE}=' + encodeURIComponent({value}) + "
            f"'; path=/; max-age={age}; SameSite=Strict';</script>")


def _page_id() -> str:
    """The page this run draws (its script hash; "" outside a script run)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return str(getattr(ctx, "page_script_hash", "") or "") if ctx is not None else ""


def _keep_analyst() -> None:
    """on_change of the name box: keep what the analyst typed (also when the run it triggers is another page's, a
    sidebar link clicked right after typing)."""
    st.session_state[ANALYST_KEPT] = str(st.session_state.get(ANALYST_KEY) or "").strip()


def analyst_name_input() -> str:
    """Render the sidebar "Analyst name" input (kept for the whole session, across pages); return the name.

    The session's name lives under a plain session key (:data:`ANALYST_KEPT`), not only in the widget's state:
    Streamlit gives a widget a different id on each page (its id includes the page's script hash), so the box on
    the Train page is another widget than the one on the Labels page. Its value crosses pages only through the
    end-of-run cleanup of ``persist_state``, which a run stopped by ``st.switch_page`` skips (a rerun request):
    after the Labels page's "Promote on the Train page" the Train page's box started empty, asked for a name the
    analyst had entered, and its cookie script made the browser forget the name. So the first run of each page
    (and any run that finds the widget state gone) fills the box from the kept name; on later runs of the same
    page the box is left alone (a full rerun must not undo what the analyst is typing). The browser remembers the
    name too (a cookie), so a reload or a new tab does not make the analyst retype it; a caption says when the name
    shown came from there, so someone else at the same browser sees whose name their edits would carry."""
    ss = st.session_state
    if ANALYST_KEPT not in ss and ANALYST_KEY not in ss and _COOKIE_WRITTEN not in ss:  # a reload, a new tab
        remembered = remembered_analyst(getattr(st.context, "cookies", None))
        ss[_COOKIE_WRITTEN] = remembered
        if remembered:
            ss[ANALYST_KEPT] = remembered
            ss[_REMEMBERED] = True
    page = _page_id()
    if ANALYST_KEPT in ss and (ss.get(_ANALYST_PAGE) != page or ANALYST_KEY not in ss):
        ss[ANALYST_KEY] = ss[ANALYST_KEPT]
    value = st.sidebar.text_input(
        "Analyst name", key=ANALYST_KEY, persist_state="session", placeholder="who is editing labels",
        on_change=_keep_analyst,
        help="Recorded with every label version you save. This browser remembers it for "
             f"{ANALYST_COOKIE_DAYS} days; clear the box to make it forget.",
    )
    ss[_ANALYST_PAGE] = page
    value = (value or "").strip()
    ss[ANALYST_KEPT] = value
    if ss.get(_REMEMBERED) and value != ss.get(_COOKIE_WRITTEN):
        ss[_REMEMBERED] = False
    if ss.get(_REMEMBERED):
        st.sidebar.caption("Remembered by this browser. Not you? Change the name above.")
    if analyst_problem(value or "x") is None:
        # on every run, not only when the name changes: a run that is superseded at once (a page switch, a rerun)
        # may never mount its elements, and a script sent only then would never set the cookie. The browser keeps
        # an element that did not change, so the script runs when it first mounts and when the name changes.
        with st.sidebar.container(key="seghz_cookie"):  # hidden by its own style: no gap in the sidebar
            st.html("<style>[data-testid='stLayoutWrapper']:has(> .st-key-seghz_cookie){display:none}</style>"
                    + analyst_cookie_script(value), unsafe_allow_javascript=True)
        ss[_COOKIE_WRITTEN] = value
    return value


PALETTE_KEY = "seghz_palette"
PALETTE_LABELS = {"distinct": "distinct (for the screen)", "study": "study palette (as in the label files)"}


def palette_input() -> str:
    """Render the sidebar "Class colours" choice (kept for the whole session, across pages); return it."""
    return st.sidebar.radio(
        "Class colours", list(PALETTE_LABELS), key=PALETTE_KEY, persist_state="session",
        format_func=PALETTE_LABELS.get,
        help="How classes are coloured on the screen. The study's hz7 palette draws open area, green land and "
             "forest in three near-identical blues; 'distinct' draws them tan, light green and dark green (and "
             "moves any colour too close to another in the other schemes). Files you export keep the study's "
             "colours.",
    )


def screen_scheme(scheme: Scheme | str) -> Scheme:
    """The scheme coloured for the screen with the session's palette (:meth:`seghz.classes.Scheme.for_display`);
    only for drawing (never to decode or write label files)."""
    sch = get_scheme(scheme) if isinstance(scheme, str) else scheme
    choice = st.session_state.get(PALETTE_KEY) or "distinct"
    return sch.for_display(choice if choice in PALETTE_LABELS else "distinct")


def analyst_name() -> str:
    """The analyst's name entered in the sidebar (stripped; empty when not entered yet).

    The input itself is rendered by :func:`page_header` on every page (session-wide state)."""
    return str(st.session_state.get(ANALYST_KEY) or "").strip()


def analyst_problem(name: str | None) -> str | None:
    """Why an analyst name cannot be recorded with a label edit (None when it can): empty, too long, or
    holding control characters. Same rules as the label store (``Workspace.save_label_edit``)."""
    import unicodedata

    from seghz.store import ANALYST_MAX

    n = unicodedata.normalize("NFC", str(name or "")).strip()
    if not n:
        return "Enter your analyst name in the sidebar first: every label edit records who made it."
    if len(n) > ANALYST_MAX:
        return (f"Your analyst name is {len(n)} characters long; at most {ANALYST_MAX} are allowed. "
                "Shorten it in the sidebar.")
    if any(unicodedata.category(ch).startswith("C") for ch in n):
        return "Your analyst name holds control characters; retype it in the sidebar."
    return None


def has_synthetic_scenes(ws: Workspace) -> bool:
    """Whether any scene of the workspace is synthetic demo data."""
    return any(s.synthetic for s in ws.list_scenes())


@st.cache_data(show_spinner=False, max_entries=256)
def _file_says_synthetic(path: str, mtime_ns: int) -> bool:
    """Whether a checkpoint file's SegHZ metadata says ``"synthetic": true`` (``python -m seghz train-demo`` writes
    it, e.g. the shipped ``checkpoints/demo_hz7.safetensors``). Read from the safetensors header alone: no weights,
    no torch (this runs in every page's sidebar). False when the file cannot be read."""
    import json
    import struct

    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if not 0 < n <= 64 * 2**20:
                return False
            header = json.loads(f.read(n))
        meta = json.loads((header.get("__metadata__") or {}).get("seghz") or "{}")
        return bool(meta.get("synthetic")) if isinstance(meta, dict) else False
    except (OSError, ValueError, struct.error, AttributeError, TypeError):
        return False


def synthetic_trained(ws: Workspace, checkpoints: list | None = None) -> set[str]:
    """Ids of the checkpoints (those in use, or ``checkpoints``) that learned from synthetic demo data only.

    A checkpoint counts when neither it nor an ancestor learned from a real scene of this workspace (their recorded
    ``train_scenes``: :meth:`Workspace.lineage_learning`) and either it is marked synthetic -- its file's metadata
    says ``synthetic: true`` (the demo trainer's mark; a head refit keeps its parent's metadata) or its recipe names
    synthetic demo data -- or all it and its ancestors learned from is recorded and is synthetic demo scenes of this
    workspace. A model registered from a file without the mark (e.g. ``gid15_hz7_unet_lite0``) does not count: what
    it learned is unknown, not synthetic."""
    scenes = ws.list_scenes()
    synthetic = {s.id for s in scenes if s.synthetic}
    real = {s.id for s in scenes if not s.synthetic}
    _, learned, unknown = ws.lineage_learning()
    out = set()
    for ck in ws.list_checkpoints() if checkpoints is None else checkpoints:
        seen = learned.get(ck.id, frozenset())
        if seen & real:
            continue
        extra = ck.recipe.get("extra") if isinstance(ck.recipe, dict) else None
        data = extra.get("data") if isinstance(extra, dict) else None  # train-demo: "synthetic demo scenes seeds …"
        marked = isinstance(data, str) and data.lower().startswith("synthetic")
        if not marked:
            try:
                path = ws.checkpoint_path(ck)
                marked = _file_says_synthetic(str(path), path.stat().st_mtime_ns)
            except (OSError, ValueError, KeyError):
                marked = False
        if marked or (ck.id not in unknown and seen and seen <= synthetic):
            out.add(ck.id)
    return out


def _sidebar_data_notices(ws: Workspace, active: Any) -> None:
    """What is synthetic, said where it matters: a clear warning when the active model learned from synthetic demo
    data only while the workspace holds real scenes (its predictions on them mean nothing), and how many scenes are
    synthetic demo scenes (a notice when all are, a quiet note when only some are)."""
    scenes = ws.list_scenes()
    n_syn = sum(s.synthetic for s in scenes)
    n_real = len(scenes) - n_syn
    # only the active model is judged on every run (every page, every stroke); the others when the warning shows
    if active is not None and n_real and active.id in synthetic_trained(ws, [active]):
        others = [c for c in ws.list_checkpoints() if c.id != active.id]
        syn = synthetic_trained(ws, others)
        real_models = [c.name for c in others if c.id not in syn]
        st.error(
            f"**The active model ({active.name}) was trained on synthetic demo data**: its predictions on the "
            f"{n_real} real scene{'s' if n_real != 1 else ''} of this workspace mean nothing. Promote a real model "
            "on the Train page (Checkpoint registry)"
            + (f" — registered: {', '.join(real_models[:3])}{' …' if len(real_models) > 3 else ''}." if real_models
               else "; none is registered yet (train one, or `python -m seghz checkpoints add FILE`).")
        )
    if n_syn and not n_real:
        st.info(
            f"**SYNTHETIC DEMO DATA** — every scene of this workspace ({n_syn}) is a synthetic demo scene: "
            "procedurally generated, not real imagery; their location near Hangzhou is nominal (for display only). "
            "Scores on them say nothing about real-world accuracy."
        )
    elif n_syn:
        st.caption(
            f"**Synthetic demo data:** {n_syn} of {len(scenes)} scenes are synthetic demo scenes (procedurally "
            f"generated, placed near Hangzhou for display only); the other {n_real} "
            f"{'are' if n_real != 1 else 'is'} real."
        )


def active_val_miou(ws: Workspace, ck: Any) -> tuple[float | None, str]:
    """The best recorded validation mIoU of checkpoint ``ck`` and where it comes from: the score it recorded when it
    was trained (``metrics["val"]``), else its cached evaluation (no TTA) of this workspace's val split at the split's
    current data version (the regression gate's or the Evaluate page's: a head refit records no validation score of
    its own); ``(None, "")`` when neither exists."""
    from seghz.report import checkpoint_val_metrics

    miou = checkpoint_val_metrics(ck.metrics)["miou"]
    if miou is not None:
        return miou, "recorded at training"
    try:
        ev = ws.find_evaluation(ck.id, "val", False, ws.data_version("val"))
    except Exception:  # noqa: BLE001  (a sidebar line must never break a page)
        ev = None
    result = ev.result if ev is not None and isinstance(ev.result, dict) else {}
    value = result.get("miou") if result.get("tta", "none") == "none" else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value), "evaluated on this workspace's val split"
    return None, ""


def page_header(title: str, caption: str | None = None, *, set_config: bool = True) -> Workspace:
    """Page title plus the sidebar block every page shows; returns the workspace.

    The sidebar shows the analyst name input, the workspace folder, the active checkpoint and what is synthetic
    (:func:`_sidebar_data_notices`): a warning when the active model learned from synthetic demo data only while the
    workspace holds real scenes, and how many scenes are synthetic demo scenes.
    """
    if set_config:
        st.set_page_config(page_title=f"SegHZ · {title}", layout="wide")
    from ui.home import claim_navigation  # (ui.home imports this module)

    claim_navigation()  # the sidebar's page list when Streamlit ran this page without app.py (ui/home.py)
    ws = get_workspace()
    st.title(title)
    if caption:
        st.caption(caption)
    with st.sidebar:
        analyst_name_input()
        palette_input()
        st.markdown("**Workspace**")
        st.code(str(ws.root), language=None)
        active = ws.active_checkpoint()
        if active is None:
            st.warning("No active checkpoint. Train one on the Train page or register one with the CLI.")
        else:
            from seghz.report import fmt_pct

            miou, source = active_val_miou(ws, active)
            st.markdown(
                f"**Active checkpoint**  \n{html.escape(active.name)}  \n"
                f"<span style='font-size:0.8em;color:#666'>{html.escape(active.id)} · {html.escape(active.arch)}/"
                f"{html.escape(active.encoder)} · {html.escape(active.scheme)} · val mIoU {fmt_pct(miou)}"
                + (f" ({html.escape(source, quote=False)})" if source else "") + "</span>",
                unsafe_allow_html=True,
            )
        _sidebar_data_notices(ws, active)
    return ws


def metric_row(items: list[tuple[str, Any]]) -> None:
    """One row of ``st.metric`` tiles, one column per ``(label, value)``."""
    for col, (label, value) in zip(st.columns(len(items)), items, strict=True):
        col.metric(label, value)


def canvas(**kwargs) -> Any:
    """Call ``streamlit_drawable_canvas.st_canvas`` (looked up at call time, so tests can patch it)."""
    import streamlit_drawable_canvas

    return streamlit_drawable_canvas.st_canvas(**kwargs)


__all__ = [
    "ANALYST_KEY", "REPO_ROOT", "active_val_miou", "analyst_name", "analyst_name_input", "analyst_problem", "canvas", "demo_disabled", "get_predictor",
    "get_workspace", "has_synthetic_scenes", "metric_row", "page_header", "predictor_for", "progress_callback",
    "scheme_legend_html", "screen_scheme", "workspace_root",
]

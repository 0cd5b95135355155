"""The app's page list (``st.navigation``) and the home page, for ``app.py``.

``streamlit run app.py`` runs :func:`main` on every rerun. It declares the pages with titles and Material icons --
Home, Map, Evaluate, Labels, Train, Align -- so the sidebar no longer names the home page after its file ("app"),
then runs the page the browser asked for:

* the pages stay the files of ``pages/`` at the URLs they had under Streamlit's automatic ``pages/`` navigation
  (``/Map``, ``/Evaluate``, ``/Labels``, ``/Train``, ``/Align``; Home at ``/``), so bookmarks and the Map's
  ``?scene=…&region=…`` links keep working;
* Home is ``app.py`` itself (not a function), so ``st.switch_page("app.py")``, ``st.page_link("app.py")`` and
  ``AppTest.switch_page("app.py")`` still find it, like ``st.switch_page("pages/1_Map.py")`` finds the Map page.
  Streamlit runs a file page by executing the file again; that inner run of ``app.py`` calls :func:`main` again,
  which sees it is inside the page run (:data:`_IN_PAGE`) and draws the home content (:func:`render_home`)
  instead of declaring the pages a second time;
* every page still runs standalone (``AppTest.from_file("pages/1_Map.py")``); the page files know nothing of this.

Because ``pages/`` sits next to ``app.py``, Streamlit starts a server in its legacy mode, in which it builds the
page list from the folder itself (the home page labelled "app") and runs a page file *without* running ``app.py``
-- until some run calls ``st.navigation``. A first visit straight to ``/Map`` (a bookmark, a shared link) after a
server start would therefore show the legacy list, and keep showing it to every session until someone opened
Home. :func:`claim_navigation`, called by every page's ``ui.common.page_header`` before it draws anything, declares
the page list in that case too, which ends the legacy mode.

Icons are Material Symbols, whose font Streamlit serves itself (emoji need a system emoji font, which a bare
Linux or an offline machine may lack: they showed as empty boxes in headless Chromium).
"""
from __future__ import annotations

import contextvars
import html
from pathlib import Path
from typing import NamedTuple

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import get_script_run_ctx

from seghz.report import checkpoint_val_metrics, fmt_pct, per_class_iou_table
from ui.common import metric_row, page_header, scheme_legend_html
from ui.label_drafts import scenes_with_drafts
from ui.scenes import scenes_panel

HOME_TITLE = "Home"
HOME_ICON = ":material/home:"


class AppPage(NamedTuple):
    path: str  # relative to app.py, as st.switch_page / st.page_link name it
    title: str  # the sidebar label
    url_path: str  # what Streamlit's pages/ navigation derived from the file name: keep it (bookmarks, links)
    icon: str
    link: str  # the home page's "Start here" link
    help: str  # the sidebar item's tooltip


PAGES = (  # the analyst's daily loop, in order
    AppPage("pages/1_Map.py", "Map", "Map", ":material/map:",
            "1. Map — draw a region and predict it with test-time augmentation",
            "Browse a scene on an offline map, draw a region and predict it with the active model."),
    AppPage("pages/2_Evaluate.py", "Evaluate", "Evaluate", ":material/bar_chart:",
            "2. Evaluate — where the model and the labels disagree, class by class",
            "Score a checkpoint on a split: IoU per class, confusion, calibration; send errors to review."),
    AppPage("pages/3_Labels.py", "Labels", "Labels", ":material/brush:",
            "3. Labels — work through the noise queue and paint corrections",
            "Review the noise queue against the labels and paint corrections (recorded under your name)."),
    AppPage("pages/4_Train.py", "Train", "Train", ":material/model_training:",
            "4. Train — retrain (or refit the head) on the corrected labels, pass the gate, promote",
            "Retrain or refit on the corrected labels, check the regression gate, promote the new model."),
    AppPage("pages/5_Align.py", "Align", "Align", ":material/straighten:",
            "Align — bring in a label map that does not line up with its imagery yet",
            "Co-register a label map with its imagery (control points or automatic matching) before import."),
)
IMPORT_CMD = "python -m seghz import --images DIR --labels DIR --scheme gid15 --target-scheme hz7"

# The browser tab's icon: Streamlit's own (what the tab showed before), served by this server. Without it the
# frontend takes the current page's Material icon and fetches it as an SVG from fonts.gstatic.com -- a request to
# the internet on every page (it fails offline); an explicit page_icon, sent before st.navigation, takes precedence.
FAVICON = Path(st.__file__).resolve().parent / "static" / "favicon.png"

# True while app.py runs as the Home page (inside the navigation's page.run()), in this script thread
_IN_PAGE: contextvars.ContextVar[bool] = contextvars.ContextVar("seghz_home_in_page", default=False)


def navigation_pages(entry: Path) -> list[st.Page]:
    """The ``st.Page`` list: Home (the entry script ``entry``), then the pages of :data:`PAGES` that exist."""
    pages = [st.Page(entry, title=HOME_TITLE, icon=HOME_ICON, default=True,
                     help="The workspace at a glance: scenes, jobs, the active model, and where to go next.")]
    for p in PAGES:
        if (entry.parent / p.path).is_file():
            pages.append(st.Page(p.path, title=p.title, icon=p.icon, url_path=p.url_path, help=p.help))
    return pages


def _set_favicon() -> None:
    if FAVICON.is_file():
        st.set_page_config(page_icon=FAVICON)


def claim_navigation() -> None:
    """Declare the page list from inside a page that Streamlit's legacy ``pages/`` mode ran directly (see the
    module's docstring), which also ends that mode for every session of this server; a no-op otherwise (under
    :func:`main`, and for a page run on its own, as in ``AppTest.from_file("pages/…")``, whose folder holds no
    ``pages/``).

    The page list replaces the legacy one in the browser; the page running is the one it resolves to (same URL,
    so the same page hash), so it is neither run again nor rerun (a rerun would drop a button click of this run).
    ``st.navigation`` makes the entry script the source of the elements that follow it (as it is in ``app.py``);
    the scope below hands the rest of the page back to the page, so its elements and widget ids are the ones a
    run through ``app.py`` gives them (widget state carries over to the next run)."""
    if not getattr(PagesManager, "uses_pages_directory", None):
        return
    ctx = get_script_run_ctx()
    if ctx is None:
        return
    _set_favicon()  # before st.navigation (see FAVICON)
    with ctx.run_with_active_hash(ctx.pages_manager.current_page_script_hash):  # restores the page's on exit
        st.navigation(navigation_pages(Path(ctx.main_script_path)))


def main(entry: str | Path) -> None:
    """``app.py``'s whole body: declare the pages and run the chosen one, or -- when ``app.py`` is being run as
    the Home page -- draw the home content."""
    entry = Path(entry)
    if _IN_PAGE.get():
        render_home(entry.parent)
        return
    # the pages set their own title (ui.common.page_header), Home keeps "SegHZ"
    st.set_page_config(page_title="SegHZ", layout="wide")
    _set_favicon()  # before st.navigation (see FAVICON)
    page = st.navigation(navigation_pages(entry))
    token = _IN_PAGE.set(True)
    try:
        page.run()
    finally:  # also when the page stops or reruns (st.rerun / st.switch_page raise through here)
        _IN_PAGE.reset(token)


def render_home(app_dir: Path) -> None:
    """The home page: what is in the workspace, the active model, and where to go next."""
    ws = page_header("SegHZ", "Land-cover segmentation workbench: evaluate, correct labels, retrain.",
                     set_config=False)  # main() set it (title "SegHZ")
    summary = ws.summary()
    scenes = ws.list_scenes()

    synthetic = [s for s in scenes if s.synthetic]
    if synthetic and len(synthetic) == len(scenes):
        st.info(
            "**This workspace holds SYNTHETIC DEMO DATA.** The demo scenes are procedurally generated hz7 "
            "town and farmland scenes (water, open area, green land, forest, glass roofs, buildings, roads) "
            "with exact labels by construction — they are not real imagery. They are placed at a nominal spot "
            "west of Hangzhou only so the map has somewhere to show them. Scores on them say nothing about "
            "real-world accuracy; import real data (below) for that."
        )
    elif synthetic:  # real data imported too: say which part is synthetic, not an alarm about the whole workspace
        st.caption(f"{len(synthetic)} of the {len(scenes)} scenes are synthetic demo scenes "
                   f"({', '.join(s.name for s in synthetic[:4])}{' …' if len(synthetic) > 4 else ''}): scores on them "
                   "say nothing about real-world accuracy.")

    st.subheader("Start here")
    st.caption("The daily loop: each page hands over to the next (Open on map, Send to label review, Retrain from "
               "the corrections). Enter your analyst name in the sidebar first: every label edit records it.")
    for p in PAGES:
        if (app_dir / p.path).is_file():
            st.page_link(p.path, label=p.link, icon=p.icon)
        else:
            st.markdown(f"{p.icon} {p.link} — _not installed in this copy (`{p.path}` is missing)_")

    drafted = sorted(scenes_with_drafts(ws) & {s.id for s in scenes})
    if drafted:
        st.info(f"**Unsaved label drafts on {len(drafted)} scene(s)**: {', '.join(drafted[:6])}"
                + (f" and {len(drafted) - 6} more" if len(drafted) > 6 else "")
                + ". Painted work kept from an earlier visit: open Labels to restore and save it, or discard it "
                  "(`python -m seghz drafts list` shows every analyst's).", icon=":material/edit_note:")
        st.page_link("pages/3_Labels.py", label="Open Labels", icon=":material/brush:")

    st.subheader("Workspace")
    sc, jobs = summary["scenes"], summary["jobs"]
    metric_row([("Scenes", sc["total"]), ("train", sc["train"]), ("val", sc["val"]), ("test", sc["test"]),
                ("unassigned", sc["none"]), ("Label versions saved", summary["label_versions"])])
    metric_row([("Checkpoints", summary["checkpoints"]), ("Jobs running", jobs["running"]),
                ("Jobs queued", jobs["queued"]), ("Jobs done", jobs["done"]),
                ("Jobs failed / died", jobs["failed"] + jobs["died"]), ("Jobs cancelled", jobs["cancelled"])])

    if scenes:
        scenes_panel(ws)
    else:
        st.warning("The workspace has no scenes yet. Import imagery with the command below.")

    st.subheader("Active checkpoint")
    active = ws.active_checkpoint()
    if active is None:
        st.warning("No checkpoint is active. Train one on the Train page, or register one with the CLI.")
    else:
        m = checkpoint_val_metrics(active.metrics)
        left, right = st.columns([3, 2])
        with left:
            st.markdown(
                f"**{html.escape(active.name)}** (`{active.id}`)  \n"
                f"{html.escape(active.arch)} / {html.escape(active.encoder)} · scheme **{html.escape(active.scheme)}** · "
                f"created {html.escape(active.created_at[:19].replace('T', ' '))} UTC"
                + (f" · fine-tuned from `{active.parent_id}`" if active.parent_id else "")
                + (f"  \n_{html.escape(active.note)}_" if active.note else "")
            )
            mc = st.columns(3)
            mc[0].metric("val mIoU", fmt_pct(m["miou"]))
            mc[1].metric("val fwIoU", fmt_pct(m["fwiou"]))
            mc[2].metric("val OA", fmt_pct(m["oa"]))
            st.caption("Validation scores recorded when the checkpoint was trained (on its own validation data). "
                       "Re-score it on this workspace on the Evaluate page.")
            try:
                st.markdown(scheme_legend_html(active.scheme), unsafe_allow_html=True)
            except KeyError:
                pass
        with right:
            table = per_class_iou_table(active.metrics)
            if table.empty:
                st.caption("No per-class validation IoU stored with this checkpoint.")
            else:
                # percent with one decimal, rounded, as the tiles ("percent" showed 99% beside 99.12%)
                st.dataframe(
                    table.assign(IoU=100 * table["IoU"]), hide_index=True,
                    column_config={"IoU": st.column_config.ProgressColumn("val IoU", format="%.1f %%", min_value=0.0,
                                                                          max_value=100.0)},
                )

    st.subheader("Import real data")
    st.markdown(
        "Bring in image/label folders (paired by file name; labels as id masks or RGB palette masks). "
        "Scenes are copied into the workspace and split into train/val/test; original labels are never modified:"
    )
    st.code(IMPORT_CMD, language="bash")
    st.caption("Single GeoTIFFs: `python -m seghz import --image FILE.tif [--label LABEL.png] --scheme hz7 --split val`. "
               "To import into another workspace, set SEGHZ_WORKSPACE or put `--workspace DIR` before `import`; "
               "see `python -m seghz import --help`.")

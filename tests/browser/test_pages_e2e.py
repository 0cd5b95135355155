"""End-to-end browser tests of the app's pages: ``streamlit run app.py`` + headless system Chromium, offline.

One server per module (``e2e_app``) on a fresh temporary workspace (``$SEGHZ_NO_DEMO=1``) holding two 256 px
georeferenced synthetic hz7 scenes -- ``town`` (val) and ``farm`` (train), both labelled -- and a tiny untrained
active checkpoint ``tiny-map`` (see ``tests/test_page_map.py``). The flows run in file order and build on each
other's workspace state: Evaluate (cached evaluation), Labels (label versions), Train (a new active model), then
the network check over every page. Each flow saves a full-page screenshot under ``tmp_path`` and checks that it is
not blank. Nothing the tests assert depends on the untrained model's quality.
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import (
    ROOT,
    app_errors,
    full_screenshot,
    run_app,
    selectbox_text,
    wait_app_idle,
)

sys.path.insert(0, str(ROOT / "tests"))
from test_page_map import SCENE_SIZE, populate_map_workspace, remove_tiles

pytestmark = pytest.mark.browser

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
# Basemap hosts the app may contact on purpose when online (none today: the Map page shows the scene's own tiles).
ONLINE_BASEMAP_HOSTS: set[str] = {"tile.openstreetmap.org", "a.tile.openstreetmap.org", "b.tile.openstreetmap.org",
                                  "c.tile.openstreetmap.org", "server.arcgisonline.com"}
TRAIN_NAME = "e2e tiny run"
TRAIN_WAIT_MS = 150_000


def add_train_scene(ws) -> None:
    """A second 256 px georeferenced synthetic scene ``farm`` in the train split (with its label)."""
    from seghz.classes import get_scheme
    from seghz.data.io import write_index_mask
    from seghz.demo import generate_scene, write_demo_geotiff

    rgb, lbl = generate_scene(SCENE_SIZE, 11)
    img = ws.root / "scenes" / "farm.tif"
    write_demo_geotiff(img, rgb)
    lab = ws.root / "labels" / "farm_label.png"
    write_index_mask(lab, lbl, get_scheme("hz7"))
    ws.add_scene("Test farm (synthetic)", img, "hz7", label_path=lab, split="train", synthetic=True, scene_id="farm")


@pytest.fixture(scope="module")
def e2e_app(chromium_browser, tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("e2e")
    ws = populate_map_workspace(tmp / "ws")
    add_train_scene(ws)
    try:
        with run_app(ws.root, tmp / "app") as url:
            yield url, ws
    finally:
        from seghz.jobs.runner import cancel_job

        for job in ws.list_jobs():  # never leave a training worker behind
            if job.active:
                cancel_job(ws, job.id)
        remove_tiles(ws.root)


@pytest.fixture
def page(chromium_browser):
    ctx = chromium_browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    try:
        yield pg
    finally:
        ctx.close()


def body_text(page) -> str:
    return page.inner_text("body")


def set_analyst(page, name: str) -> None:
    box = page.get_by_label("Analyst name", exact=True)
    box.fill(name)
    box.press("Enter")
    wait_app_idle(page)


# ------------------------------------------------------------------------------------------------ 1. Evaluate


def test_evaluate_click_confusion_cell_thumbnails_open_on_map(e2e_app, page, tmp_path):
    url, ws = e2e_app
    page.goto(f"{url}/Evaluate", wait_until="domcontentloaded")
    page.get_by_role("button", name="Run evaluation").click()
    plot = page.locator(".st-key-eval_cm .js-plotly-plot")
    plot.wait_for(timeout=120_000)
    page.get_by_text("mIoU").first.wait_for()
    page.get_by_text("Confusion matrix — ").first.wait_for()
    page.wait_for_function("() => document.querySelector('.st-key-eval_cm .js-plotly-plot .heatmaplayer image, "
                           ".st-key-eval_cm .js-plotly-plot .hm image') !== null")

    # The smallest non-empty off-diagonal cell of the rendered heatmap (the drill-down starts on the largest one,
    # so picking another proves the click), and where plotly draws it (page pixels).
    cell = plot.evaluate(
        """(gd) => {
            const z = gd.calcdata[0][0].z; let best = null;
            for (let i = 0; i < z.length; i++) for (let j = 0; j < z[i].length; j++)
                if (i !== j && z[i][j] > 0 && (!best || z[i][j] < best.v)) best = {i, j, v: z[i][j]};
            if (!best) return null;
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
            return {...best, x: r.left + xa._offset + xa.l2p(best.j), y: r.top + ya._offset + ya.l2p(best.i)};
        }"""
    )
    assert cell is not None, "the untrained model should confuse at least one pair of classes"
    names = ws.find_evaluation("tiny-map", "val", False, ws.data_version("val")).result["classes"]
    a_name, b_name = names[cell["i"]], names[cell["j"]]

    # A real click on the heatmap cell (Streamlit's on_select="rerun" selection) drives the drill-down pickers.
    plot.scroll_into_view_if_needed()
    cell = {**cell, **plot.evaluate(
        """(gd, c) => { const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
                        return {x: r.left + xa._offset + xa.l2p(c.j), y: r.top + ya._offset + ya.l2p(c.i)}; }""",
        cell,
    )}
    page.mouse.move(cell["x"] - 3, cell["y"] - 3)
    page.mouse.move(cell["x"], cell["y"], steps=3)  # plotly clicks the point under its hover label
    plot.locator(".hoverlayer .hovertext").first.wait_for(state="attached", timeout=10_000)
    page.mouse.click(cell["x"], cell["y"])
    wait_app_idle(page)
    count = int(round(cell["v"]))
    page.get_by_text(f"{count:,} px labelled {a_name} are predicted {b_name}").first.wait_for(timeout=30_000)
    picked = [selectbox_text(page, k) for k in ("eval_dd_true", "eval_dd_pred")]
    assert a_name in picked[0] and b_name in picked[1], picked

    # Thumbnails of the windows holding that confusion, each with an "Open on map" button.
    thumbs = page.locator("[data-testid='stImage']").filter(has_text="in magenta")
    thumbs.first.wait_for(timeout=60_000)
    assert thumbs.count() >= 1
    img = thumbs.first.locator("img").first
    img.scroll_into_view_if_needed()
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=img.element_handle(), timeout=30_000)
    page.get_by_text("Open on map: scene town").first.wait_for()
    assert not app_errors(page), app_errors(page)
    full_screenshot(page, tmp_path / "evaluate.png")

    # "Open on map" switches to the Map page with the window's scene selected and its map shown.
    page.get_by_role("button", name="Open on map").first.click()
    page.wait_for_url(re.compile(r".*/Map$"), timeout=30_000)
    frame = page.wait_for_selector("iframe[title='streamlit_folium.st_folium']", timeout=60_000).content_frame()
    frame.wait_for_function("() => document.querySelectorAll('img.leaflet-tile-loaded').length > 0", timeout=30_000)
    assert "Test town (synthetic)" in selectbox_text(page, "map_scene")
    # ... opened at the window (the region drawn for us, predicted), with the error layer on and its legend
    page.get_by_text(re.compile(r"Opened at rows \d+–\d+, columns \d+–\d+")).first.wait_for(timeout=60_000)
    page.get_by_text(re.compile(r"Error layer: [\d,]+ px where the prediction differs")).first.wait_for(timeout=120_000)
    frame.wait_for_selector("img.leaflet-image-layer", state="attached", timeout=60_000)
    assert page.get_by_text("Drawn region: rows").count() >= 1
    assert not app_errors(page), app_errors(page)
    full_screenshot(page, tmp_path / "evaluate_to_map.png")


# ------------------------------------------------------------------------------------------------ 2. Labels


def canvas_box(page):
    """The drawable canvas element receiving the mouse (fabric.js' upper canvas), and its bounding box."""
    host = page.locator("[class*='st-key-lbl_canvas_']").first
    host.wait_for(timeout=60_000)
    frames = host.locator("iframe")
    if frames.count():  # components v1: the canvas lives in an iframe
        target = host.frame_locator("iframe").locator("canvas.upper-canvas, canvas").last
    else:
        target = host.locator("canvas.upper-canvas, canvas").last
    target.wait_for(timeout=30_000)
    return target, target.bounding_box()


def history_has(page, *cells: str) -> None:
    """Wait until one row of a dataframe grid (the Labels page's history) holds all ``cells``."""
    page.wait_for_function(
        """(cells) => [...document.querySelectorAll('[data-testid=stDataFrame] [role=row]')].some(
               r => { const t = [...r.querySelectorAll('[role=gridcell]')].map(c => c.textContent.trim());
                      return cells.every(c => t.includes(c)); })""",
        arg=list(cells), timeout=30_000,
    )


def build_queue_at_lowest_threshold(page) -> None:
    """Slider to its minimum with the keyboard, press Build queue, wait for item #1."""
    thumb = page.locator(".st-key-lbl_q_threshold input[type='range'], .st-key-lbl_q_threshold [role='slider']").first
    thumb.focus()
    thumb.press("Home")
    page.locator(".st-key-lbl_q_threshold").get_by_text("0.05").first.wait_for(timeout=30_000)
    wait_app_idle(page)
    page.get_by_role("button", name="Build queue").click()
    page.get_by_text(re.compile(r"^#1 · label ")).first.wait_for(timeout=120_000)


def test_labels_queue_paint_save_history_undo(e2e_app, page, tmp_path):
    url, ws = e2e_app
    page.goto(f"{url}/Labels", wait_until="domcontentloaded")
    page.get_by_text("Paint a correction").first.wait_for()
    set_analyst(page, "E2E Analyst")
    # the scene box is re-rendered by the analyst's rerun: wait until it shows a scene again (a read in the middle of
    # that rerun found it empty once, on a loaded 2-core CI machine)
    names = [s.name for s in ws.list_scenes()]
    page.wait_for_function(
        "([key, names]) => { const b = document.querySelector('.st-key-' + key); if (!b) return false;"
        " const t = [b.innerText, ...[...b.querySelectorAll('input')].map(i => i.value)].join(' ');"
        " return names.some(n => t.includes(n)); }", arg=["lbl_scene", names], timeout=60_000)
    shown = selectbox_text(page, "lbl_scene")  # the first labelled scene: whichever it is, edit that one
    sid = next(s.id for s in ws.list_scenes() if s.name in shown)
    before = ws.latest_label_version(sid)

    # The noise queue: lowest threshold (slider to its minimum with the keyboard), build, the top item shows.
    build_queue_at_lowest_threshold(page)
    accept = page.get_by_role("button", name="Accept prediction").first
    accept.wait_for()
    assert accept.is_visible()

    # Paint a stroke across the canvas with the mouse.
    canvas, box = canvas_box(page)
    assert box and box["width"] >= 256 and box["height"] >= 256, box
    canvas.scroll_into_view_if_needed()
    canvas, box = canvas_box(page)
    x0, y0 = box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.5
    page.mouse.move(x0, y0)
    page.mouse.down()
    for k in range(1, 13):
        page.mouse.move(x0 + box["width"] * 0.05 * k, y0 + (k % 3) * 4, steps=2)
    page.mouse.up()
    painted = re.compile(r"not yet applied: ([1-9][\d,]*) canvas px")
    page.get_by_text(painted).first.wait_for(timeout=30_000)
    wait_app_idle(page)

    page.get_by_role("button", name="Save as new label version").click()
    page.get_by_text(f"Saved label version {before + 1}").first.wait_for(timeout=30_000)
    wait_app_idle(page)  # the new canvas's rerun has happened: the confirmation is still there
    assert page.get_by_text(f"Saved label version {before + 1}").first.is_visible()
    assert ws.latest_label_version(sid) == before + 1
    h = ws.label_history(sid)[-1]
    assert h.analyst == "E2E Analyst" and h.tool == "brush" and h.n_changed + h.n_confirmed > 0
    # the corrections as GeoJSON: the new layer's pixels, with its provenance
    btn = page.locator(".st-key-lbl_export_corrections").get_by_role("button")
    btn.scroll_into_view_if_needed()
    with page.expect_download(timeout=60_000) as dl:
        btn.click()
    fc = json.loads(Path(dl.value.path()).read_text())
    mine = [f["properties"] for f in fc["features"] if f["properties"]["version"] == before + 1]
    assert fc["label_version"] == before + 1 and mine
    assert all(p["analyst"] == "E2E Analyst" and p["tool"] == "brush" for p in mine)
    assert sum(p["area_px"] for p in mine) == h.n_changed + h.n_confirmed
    undo = page.locator(".st-key-lbl_undo").get_by_role("button", name=re.compile(r"^Undo my last edit")).first
    redo = page.locator(".st-key-lbl_redo").get_by_role("button", name=re.compile(r"^Redo")).first
    page.wait_for_function("() => /\\(v\\d+\\)/.test(document.querySelector('.st-key-lbl_undo button').innerText)")
    assert undo.is_enabled() and f"(v{before + 1})" in undo.inner_text()
    assert redo.is_disabled()
    page.evaluate("() => [...document.querySelectorAll('h3')].find(h => h.innerText.includes('Label history'))"
                  "?.scrollIntoView()")  # no stability wait: the page may be rerunning
    # the history grid (glide-data-grid keeps an accessible table of its cells in the DOM): the new version's row
    history_has(page, f"{before + 1}", "brush", "E2E Analyst")
    page.get_by_text(f"editing from label version {before + 1}").first.wait_for()
    full_screenshot(page, tmp_path / "labels_saved.png")

    undo.click()
    page.get_by_text(f"Undid your label version {before + 1} (recorded as version {before + 2})").first.wait_for(
        timeout=30_000)
    page.wait_for_function("() => !document.querySelector('.st-key-lbl_redo button').disabled")
    assert redo.is_enabled() and f"(v{before + 1})" in redo.inner_text()
    assert undo.is_disabled()
    page.get_by_text(f"editing from label version {before + 2}").first.wait_for()
    history_has(page, f"{before + 2}", f"undo v{before + 1}")
    hist = ws.label_history(sid)
    assert [x.kind for x in hist][-1] == "undo" and hist[-1].target_version == before + 1
    assert not app_errors(page), app_errors(page)
    full_screenshot(page, tmp_path / "labels_undone.png")


def test_labels_open_top_queue_item(e2e_app, page):
    url, _ws = e2e_app
    page.goto(f"{url}/Labels", wait_until="domcontentloaded")
    page.get_by_text("Noise queue").first.wait_for()
    wait_app_idle(page)
    if not page.get_by_text(re.compile(r"^#1 · label ")).count():
        build_queue_at_lowest_threshold(page)
    opener = page.get_by_role("button", name="Open in the canvas")
    opener.first.wait_for(timeout=30_000)
    opener.first.click()
    wait_app_idle(page)
    page.get_by_text(re.compile(r"Zoomed to the component at rows \d+")).first.wait_for(timeout=30_000)
    assert not app_errors(page)


def test_labels_buttons_show_their_whole_label(e2e_app, page):
    """The edit row was laid out in equal columns that cut "Save as new l…" and "Save and confirm the r…" at 1400 px
    (the queue items' verdict row, "Accept pre…", got the same layout): every button of the page shows its whole
    label."""
    url, _ws = e2e_app
    page.goto(f"{url}/Labels", wait_until="domcontentloaded")
    page.locator(".st-key-lbl_confirm_window button").first.wait_for()
    wait_app_idle(page)
    cut = page.evaluate(
        """() => [...document.querySelectorAll("[data-testid='stMain'] button .stMarkdownEllipsis")]
                 .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText)"""
    )
    assert cut == [], f"button labels cut with an ellipsis: {cut}"


# ------------------------------------------------------------------------------------------------ 3. Train


def progress_state(page) -> str:
    """Text of the job panel's progress bar ("<status>: <message>"), or "" when none is shown."""
    texts = page.locator("[data-testid='stProgress']").all_inner_texts()
    return next((t.strip() for t in texts if re.match(r"\s*(queued|running|done|failed|died|cancelled)\b", t)), "")


def test_train_tiny_job_progress_promote_home_shows_model(e2e_app, page, tmp_path):
    url, ws = e2e_app
    page.goto(f"{url}/Train", wait_until="domcontentloaded")
    page.get_by_role("button", name="Launch training").wait_for()
    page.get_by_text("the active checkpoint (fine-tune").first.wait_for()
    for label, value in (("Epochs", "1"), ("Batch size", "2"), ("Crop size (px)", "64"), ("Steps per epoch", "1")):
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_label("Name of the new checkpoint (optional)").fill(TRAIN_NAME)
    page.get_by_role("button", name="Launch training").click()
    page.get_by_text(re.compile(r"Training job \S+ submitted")).first.wait_for(timeout=30_000)
    (job,) = [j for j in ws.list_jobs() if j.kind == "train"]
    assert job.config["epochs"] == 1 and job.config["crop_size"] == 64 and job.config["steps_per_epoch"] == 1

    # Watch the job's progress bar (the page polls every 2 s) until the regression gate shows.
    seen: list[str] = []
    deadline = time.monotonic() + TRAIN_WAIT_MS / 1000
    gate = page.get_by_text("Gate verdict:")
    while time.monotonic() < deadline:
        state = progress_state(page)
        if state and (not seen or seen[-1] != state):
            seen.append(state)
        if gate.count():
            break
        page.wait_for_timeout(500)
    job = ws.get_job(job.id)
    assert job.status == "done", (job.status, job.message, seen)
    assert gate.count(), f"no gate verdict shown after the job finished; progress seen: {seen}"
    final = progress_state(page)
    if final and (not seen or final != seen[-1]):
        seen.append(final)
    assert len(seen) >= 2 and seen[0] != seen[-1], f"the progress bar never changed: {seen}"
    assert seen[-1].startswith("done"), seen

    new_id = job.result["checkpoint_id"]
    verdict = gate.first.inner_text()
    assert re.search(r"Gate verdict: (PASS|FLAGGED|UNKNOWN)", verdict), verdict
    if "UNKNOWN" in verdict and page.get_by_role("button", name="Score both models on the validation split").count():
        page.get_by_role("button", name="Score both models on the validation split").click()
        page.get_by_text(re.compile(r"Gate verdict: (PASS|FLAGGED)")).first.wait_for(timeout=120_000)
        verdict = page.get_by_text("Gate verdict:").first.inner_text()
    full_screenshot(page, tmp_path / "train_gate.png")
    set_analyst(page, "E2E Analyst")  # every promotion is recorded with the analyst's name
    if "PASS" not in verdict:  # flagged: a recorded override with a reason
        page.get_by_text("Override the regression gate and promote anyway").click()
        wait_app_idle(page)
        reason = page.get_by_label("Reason for the override (recorded)")
        reason.fill("e2e test: untrained models")
        reason.press("Enter")
        wait_app_idle(page)
    promote = page.get_by_role("button", name="Promote to active")
    promote.wait_for()
    page.wait_for_function("() => [...document.querySelectorAll('button')].some(b => b.innerText.includes("
                           "'Promote to active') && !b.disabled)", timeout=30_000)
    promote.click()
    page.get_by_text("This checkpoint is the active one.").first.wait_for(timeout=60_000)
    assert ws.active_checkpoint().id == new_id
    wait_app_idle(page)  # the previous run's verdict box stays (stale) until this run has finished
    assert not app_errors(page), app_errors(page)

    # The home page shows the new active model.
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_text("Active checkpoint").first.wait_for()
    main = page.locator("[data-testid='stMain']")
    main.get_by_text(new_id).first.wait_for(timeout=30_000)
    text = main.inner_text()
    assert TRAIN_NAME in text and "fine-tuned from tiny-map" in text, text
    full_screenshot(page, tmp_path / "home.png")


# ------------------------------------------------------------------------------------------------ 4. offline


def test_every_page_offline_no_failed_requests(e2e_app, page, tmp_path):
    url, _ws = e2e_app
    failed: list[str] = []
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("requestfailed", lambda r: failed.append(f"{r.url} ({r.failure})"))
    page.on("response", lambda r: failed.append(f"{r.url} (HTTP {r.status})") if r.status >= 400 else None)
    ready = {"": "Active checkpoint", "Map": "Overlay opacity", "Evaluate": "Run evaluation",
             "Labels": "Paint a correction", "Train": "Launch training"}
    for path, marker in ready.items():
        page.goto(f"{url}/{path}", wait_until="domcontentloaded")
        page.get_by_text(marker).first.wait_for(timeout=60_000)
        if path == "Map":
            page.wait_for_selector("iframe[title='streamlit_folium.st_folium']").content_frame().wait_for_function(
                "() => document.querySelectorAll('img.leaflet-tile-loaded').length > 0", timeout=30_000)
        wait_app_idle(page)
        page.wait_for_timeout(500)
        errors = [e for e in app_errors(page) if not e.startswith("Gate verdict:")]  # a flagged verdict is an st.error
        assert not errors, (path, errors)
        full_screenshot(page, tmp_path / f"offline_{path or 'home'}.png")

    def basemap(u: str) -> bool:
        return urlparse(u.split(" ")[0]).hostname in ONLINE_BASEMAP_HOSTS

    def stcore_probe(f: str) -> bool:  # Streamlit's frontend probes <page path>/_stcore/... before the root path
        path = urlparse(f.split(" ")[0]).path
        return f.endswith("(HTTP 404)") and re.fullmatch(r"/[^/]+/_stcore/(health|host-config)", path) is not None

    def own_abort(f: str) -> bool:  # the browser cancelled a request to the app itself (a font still loading when
        # the test moved to the next page): nothing failed to be served; 4xx/5xx and any other host still count
        return f.endswith("(net::ERR_ABORTED)") and f.startswith(url + "/")

    bad = [f for f in failed if not basemap(f) and not stcore_probe(f) and not own_abort(f)]
    assert not bad, f"failed requests: {bad}"
    external = [u for u in requests if urlparse(u).scheme in ("http", "https", "ws", "wss")
                and urlparse(u).hostname not in LOCAL_HOSTS and not basemap(u)]
    assert not external, f"requests to non-local hosts: {external}"
    paths = {urlparse(u).path for u in requests}
    assert "/app/static/vendor/leaflet/leaflet.js" in paths, sorted(p for p in paths if "leaflet" in p)
    assert "/app/static/vendor/leaflet/leaflet.css" in paths, sorted(p for p in paths if "leaflet" in p)
    leaflet = [u for u in requests if "leaflet" in urlparse(u).path.lower()]
    assert leaflet and all(urlparse(u).hostname in LOCAL_HOSTS and "/app/static/" in u for u in leaflet), leaflet

"""The sidebar's page list in a real browser (see ``ui/home.py``, and ``tests/test_navigation.py`` for the AppTest
side): a real ``streamlit run app.py`` in headless system Chromium whose first visit is ``/Map?scene=…`` (a bookmark
or shared link right after a server start: Streamlit is still in its legacy ``pages/`` mode then): the sidebar
labels in order, the Map page reads the link's query, a widget keeps its value; then Home, and a click on "Map"
lands on ``/Map``; nothing is fetched from outside this server (the pages' Material icons must not become favicons
loaded from fonts.gstatic.com).
"""
from __future__ import annotations

import sys
import time

import pytest
from conftest import ROOT, app_errors, run_app, wait_app_idle

REPO = ROOT
NAV = ["Home", "Map", "Evaluate", "Labels", "Train", "Align"]



@pytest.fixture
def nav_app(chromium_browser, tmp_path):
    """A fresh ``streamlit run app.py`` (nobody has opened a page yet) on a workspace with one 256 px georeferenced
    synthetic scene ``town`` (no model)."""
    from seghz.classes import get_scheme
    from seghz.data.io import write_index_mask
    from seghz.demo import generate_scene, write_demo_geotiff
    from seghz.store import Workspace

    sys.path.insert(0, str(REPO / "tests"))
    from test_page_map import remove_tiles

    w = Workspace(tmp_path / "ws")
    rgb, lbl = generate_scene(256, 0)
    write_demo_geotiff(w.root / "scenes" / "town.tif", rgb)
    write_index_mask(w.root / "labels" / "town_label.png", lbl, get_scheme("hz7"))
    w.add_scene("Test town (synthetic)", w.root / "scenes" / "town.tif", "hz7",
                label_path=w.root / "labels" / "town_label.png", split="val", synthetic=True, scene_id="town")
    try:
        with run_app(w.root, tmp_path / "app") as url:
            yield url
    finally:
        remove_tiles(w.root)


def nav_labels(page) -> list[str]:
    """The sidebar page list's labels, top to bottom (without the icons' ligature text)."""
    return page.locator("[data-testid='stSidebarNavLink'] [data-testid='stMarkdownContainer']").all_inner_texts()


def nav_paths(page) -> list[str]:
    from urllib.parse import urlparse

    return [urlparse(a.get_attribute("href")).path for a in page.locator("[data-testid='stSidebarNavLink']").all()]


@pytest.mark.browser
def test_sidebar_lists_home_and_the_pages_and_keeps_their_urls(nav_app, chromium_browser):
    from urllib.parse import urlparse

    ctx = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    outside: list[str] = []  # e.g. the pages' Material icons fetched as favicons from fonts.gstatic.com
    page.on("request", lambda r: outside.append(r.url)
            if urlparse(r.url).hostname not in ("127.0.0.1", "localhost") and not r.url.startswith("data:") else None)
    try:
        # the server's first visit: a link to the Map page; it reads the query (an unknown scene is named, the first
        # scene shown) and the sidebar lists the app's pages, not the legacy pages/ list ("app", …)
        page.goto(f"{nav_app}/Map?scene=nowhere", wait_until="domcontentloaded")
        page.get_by_text("The link names scene").first.wait_for()
        assert "nowhere" in page.inner_text("[data-testid='stMain']")
        page.wait_for_function("() => new URLSearchParams(location.search).get('scene') === 'town'")
        assert urlparse(page.url).path == "/Map"
        wait_app_idle(page)
        assert nav_labels(page) == NAV, nav_labels(page)
        assert page.title() == "SegHZ · Map"
        assert not page.locator("[role='dialog']").count(), page.locator("[role='dialog']").all_inner_texts()
        # a widget of that first run keeps its state in the next runs (which go through app.py)
        box = page.get_by_label("Analyst name", exact=True)
        box.fill("Ann")
        box.press("Enter")
        wait_app_idle(page)
        assert not app_errors(page), app_errors(page)

        page.locator("[data-testid='stSidebarNavLink']", has_text="Home").first.click()
        page.get_by_text("Start here").first.wait_for()
        wait_app_idle(page)
        assert urlparse(page.url).path == "/"
        assert page.get_by_label("Analyst name", exact=True).input_value() == "Ann"
        labels = nav_labels(page)
        assert labels == NAV, labels
        assert "app" not in [t.strip().lower() for t in labels]
        assert nav_paths(page) == ["/", "/Map", "/Evaluate", "/Labels", "/Train", "/Align"], nav_paths(page)
        assert page.title() == "SegHZ"
        assert not app_errors(page), app_errors(page)

        page.locator("[data-testid='stSidebarNavLink']", has_text="Map").first.click()
        page.wait_for_url(lambda u: urlparse(u).path == "/Map", timeout=30_000)
        page.locator("[data-testid='stMain'] h1", has_text="Map").first.wait_for()
        page.wait_for_function("() => document.title === 'SegHZ · Map'")
        assert nav_labels(page) == NAV

        # the browser keeps the name (a cookie written by the sidebar's script; every run carries it)
        deadline = time.monotonic() + 30
        while not [c for c in ctx.cookies() if c["name"] == "seghz_analyst"] and time.monotonic() < deadline:
            page.wait_for_timeout(250)
        assert [c["value"] for c in ctx.cookies() if c["name"] == "seghz_analyst"] == ["Ann"]
        # a reload is a new session: the name comes back from the cookie, and the sidebar says so
        page.reload(wait_until="domcontentloaded")
        page.get_by_text("Remembered by this browser").first.wait_for()
        wait_app_idle(page)
        page.wait_for_function("() => [...document.querySelectorAll('input')].some(e => e.value === 'Ann')")
        assert page.get_by_label("Analyst name", exact=True).input_value() == "Ann"
        assert [c["value"] for c in ctx.cookies() if c["name"] == "seghz_analyst"] == ["Ann"]
        assert not outside, outside
    finally:
        ctx.close()
    other = chromium_browser.new_context()  # another browser profile: nobody's name
    try:
        page = other.new_page()
        page.set_default_timeout(60_000)
        page.goto(nav_app, wait_until="domcontentloaded")
        page.get_by_text("Start here").first.wait_for()
        wait_app_idle(page)
        assert page.get_by_label("Analyst name", exact=True).input_value() == ""
        assert not page.get_by_text("Remembered by this browser").count()
    finally:
        other.close()


@pytest.mark.browser
def test_analyst_name_survives_switch_page_from_a_fragment(chromium_browser, tmp_path):
    """Labels → "Promote on the Train page" (an ``st.switch_page`` from the jobs fragment) lost the sidebar name:
    the box is another widget on each page (its id includes the page), and the run stopped by the switch skipped the
    cleanup that carries its value over, so the Train page asked for a name and Promote stayed disabled (and the
    cookie script made the browser forget the name)."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_page_map import populate_map_workspace, remove_tiles

    ws = populate_map_workspace(tmp_path / "ws")
    src = ws.checkpoint_path(ws.get_checkpoint("tiny-map"))
    (ws.root / "checkpoints" / "refit.safetensors").write_bytes(src.read_bytes())
    ck = ws.get_checkpoint("tiny-map")
    ws.register_checkpoint(ws.root / "checkpoints" / "refit.safetensors",
                           {"arch": ck.arch, "encoder": ck.encoder, "scheme": "hz7", "metrics": {"val": None}},
                           checkpoint_id="refit-x", name="refit x", parent_id="tiny-map")
    jid = ws.create_job("refit", {"checkpoint_id": "tiny-map", "origin": "labels"})
    ws.update_job(jid, status="done", progress=1.0, result={"checkpoint_id": "refit-x"})
    ctx = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    try:
        with run_app(ws.root, tmp_path / "app") as url:
            page.goto(f"{url}/Labels", wait_until="domcontentloaded")
            page.get_by_text("Retrain with corrections").first.wait_for()
            wait_app_idle(page)
            box = page.get_by_label("Analyst name", exact=True)
            box.fill("Ann")
            box.press("Enter")
            deadline = time.monotonic() + 30  # the run that took the name has ended: its cookie script ran
            while not [c for c in ctx.cookies() if c["name"] == "seghz_analyst"] and time.monotonic() < deadline:
                page.wait_for_timeout(250)
            wait_app_idle(page)
            button = page.get_by_role("button", name="Promote on the Train page")
            # one button: a rerun still finishing can briefly show the stale element beside its replacement
            from playwright.sync_api import expect

            expect(button).to_have_count(1, timeout=30_000)
            button.scroll_into_view_if_needed()
            button.click()
            page.locator("[data-testid='stMain'] h1", has_text="Train").first.wait_for()
            page.get_by_text("Launch a training run").first.wait_for()
            wait_app_idle(page)
            assert page.url.endswith("/Train"), page.url
            assert page.get_by_label("Analyst name", exact=True).input_value() == "Ann"
            assert not page.get_by_text("Enter your analyst name in the sidebar to promote").count()
            assert [c["value"] for c in ctx.cookies() if c["name"] == "seghz_analyst"] == ["Ann"]
            assert not app_errors(page), app_errors(page)
    finally:
        ctx.close()
        remove_tiles(ws.root)


@pytest.mark.browser
def test_a_name_typed_after_moving_to_another_page_stays_on_its_next_runs(chromium_browser, tmp_path):
    """A helper saw (in AppTest) the name typed on Evaluate, after coming from Home, wiped on the next run: a real
    browser must keep it through the page's following runs."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_page_map import populate_map_workspace, remove_tiles

    ws = populate_map_workspace(tmp_path / "ws")
    ctx = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    try:
        with run_app(ws.root, tmp_path / "app") as url:
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_text("Start here").first.wait_for()
            wait_app_idle(page)
            page.locator("[data-testid='stSidebarNavLink']", has_text="Evaluate").click()
            page.locator("[data-testid='stMain'] h1", has_text="Evaluate").first.wait_for()
            wait_app_idle(page)
            box = page.get_by_label("Analyst name", exact=True)
            box.fill("Bea")
            box.press("Enter")
            wait_app_idle(page)
            page.get_by_text("test", exact=True).first.click()  # the Split radio: another run of the page
            wait_app_idle(page)
            page.wait_for_timeout(1500)
            wait_app_idle(page)
            assert page.get_by_label("Analyst name", exact=True).input_value() == "Bea"
            assert not app_errors(page), app_errors(page)
    finally:
        ctx.close()
        remove_tiles(ws.root)

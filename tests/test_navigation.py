"""The app's page list: the sidebar reads Home, Map, Evaluate, Labels, Train, Align (not "app", the entry script's
file name) and the pages keep their files and URLs (``/Map`` …), see ``ui/home.py``.

* AppTest: ``app.py`` renders the home content through ``st.navigation``; ``switch_page`` by file name (the pages'
  own ``st.switch_page("pages/1_Map.py")`` and ``"app.py"`` for Home) still finds the pages, and a page run by
  Streamlit's legacy ``pages/`` mode declares the app's page list itself.
* Browser (``-m browser``): a real ``streamlit run app.py`` (``tests/browser/conftest.py``) in headless system
  Chromium, whose first visit is ``/Map?scene=…`` (a bookmark or shared link right after a server start: Streamlit
  is still in its legacy ``pages/`` mode then): the sidebar labels in order, the Map page reads the link's query, a
  widget keeps its value; then Home, and a click on "Map" lands on ``/Map``; nothing is fetched from outside this
  server (the pages' Material icons must not become favicons loaded from fonts.gstatic.com).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from streamlit.testing.v1 import AppTest
from test_pages import TIMEOUT, assert_ok, texts, tiny_checkpoint, ws  # noqa: F401  (fixtures)

NAV = ["Home", "Map", "Evaluate", "Labels", "Train", "Align"]
# what each page's URL was under Streamlit's automatic pages/ navigation (file name less its number): kept
URLS = {"pages/1_Map.py": "Map", "pages/2_Evaluate.py": "Evaluate", "pages/3_Labels.py": "Labels",
        "pages/4_Train.py": "Train", "pages/5_Align.py": "Align"}


def _browser_helpers():
    """``tests/browser/conftest.py`` as a module of its own (its name clashes with ``tests/conftest.py``)."""
    spec = importlib.util.spec_from_file_location("seghz_browser_conftest", REPO / "tests" / "browser" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bc = _browser_helpers()
chromium_browser = bc.chromium_browser  # the session fixture: a headless /usr/bin/chromium through Playwright


# ------------------------------------------------------------------------------------------------ AppTest


def test_home_renders_through_the_navigation(ws):  # noqa: F811
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    assert_ok(at)
    assert [t.value for t in at.title] == ["SegHZ"]  # the home content, once (not the page list run twice)
    heads = [h.value for h in at.subheader]
    assert heads == ["Start here", "Workspace", "Active checkpoint", "Import real data"], heads
    assert "tiny test model" in texts(at)
    assert len([i for i in at.sidebar.text_input if i.key == "seghz_analyst"]) == 1


def test_pages_are_registered_with_titles_icons_and_their_old_urls(ws):  # noqa: F811
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    assert_ok(at)
    pages = list(at._registered_pages.values())  # what st.navigation told the pages manager, in order
    assert [p["page_name"] for p in pages] == NAV
    assert [p["icon"] for p in pages] == [":material/home:", ":material/map:", ":material/bar_chart:",
                                          ":material/brush:", ":material/model_training:", ":material/straighten:"]
    by_file = {Path(p["script_path"]).relative_to(REPO).as_posix(): p["url_pathname"] for p in pages}
    assert by_file == {"app.py": "", **URLS}


@pytest.mark.parametrize("script,title", [("pages/2_Evaluate.py", "Evaluate"), ("pages/3_Labels.py", "Labels"),
                                          ("pages/4_Train.py", "Train"), ("pages/5_Align.py", "Align")])
def test_switch_page_by_file_name_reaches_each_page_and_home(ws, script, title):  # noqa: F811
    """(The Map page, which builds tile pyramids, is reached by a click in the browser test below.)"""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page(script).run()
    assert_ok(at)
    assert [t.value for t in at.title] == [title]
    # Streamlit ran the page file in its legacy pages/ mode (AppTest starts every run in it, as a fresh server does);
    # the page declared the app's page list itself (ui.home.claim_navigation), not the legacy one ("app", …)
    assert [p["page_name"] for p in at._registered_pages.values()] == NAV
    at.switch_page("app.py").run()
    assert_ok(at)
    assert [t.value for t in at.title] == ["SegHZ"]


# ------------------------------------------------------------------------------------------------ browser


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
        with bc.run_app(w.root, tmp_path / "app") as url:
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
        bc.wait_app_idle(page)
        assert nav_labels(page) == NAV, nav_labels(page)
        assert page.title() == "SegHZ · Map"
        assert not page.locator("[role='dialog']").count(), page.locator("[role='dialog']").all_inner_texts()
        # a widget of that first run keeps its state in the next runs (which go through app.py)
        box = page.get_by_label("Analyst name", exact=True)
        box.fill("Ann")
        box.press("Enter")
        bc.wait_app_idle(page)
        assert not bc.app_errors(page), bc.app_errors(page)

        page.locator("[data-testid='stSidebarNavLink']", has_text="Home").first.click()
        page.get_by_text("Start here").first.wait_for()
        bc.wait_app_idle(page)
        assert urlparse(page.url).path == "/"
        assert page.get_by_label("Analyst name", exact=True).input_value() == "Ann"
        labels = nav_labels(page)
        assert labels == NAV, labels
        assert "app" not in [t.strip().lower() for t in labels]
        assert nav_paths(page) == ["/", "/Map", "/Evaluate", "/Labels", "/Train", "/Align"], nav_paths(page)
        assert page.title() == "SegHZ"
        assert not bc.app_errors(page), bc.app_errors(page)

        page.locator("[data-testid='stSidebarNavLink']", has_text="Map").first.click()
        page.wait_for_url(lambda u: urlparse(u).path == "/Map", timeout=30_000)
        page.locator("[data-testid='stMain'] h1", has_text="Map").first.wait_for()
        page.wait_for_function("() => document.title === 'SegHZ · Map'")
        assert nav_labels(page) == NAV
        assert not outside, outside
    finally:
        ctx.close()

"""The app's page list: the sidebar reads Home, Map, Evaluate, Labels, Train, Align (not "app", the entry script's
file name) and the pages keep their files and URLs (``/Map`` …), see ``ui/home.py``.

* AppTest: ``app.py`` renders the home content through ``st.navigation``; ``switch_page`` by file name (the pages'
  own ``st.switch_page("pages/1_Map.py")`` and ``"app.py"`` for Home) still finds the pages, and a page run by
  Streamlit's legacy ``pages/`` mode declares the app's page list itself.
* In a browser: ``tests/browser/test_navigation_browser.py`` (it runs with the other browser tests, before any
  AppTest: Playwright's sync API refuses to start in a thread where AppTest left an asyncio loop running).
"""
from __future__ import annotations

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

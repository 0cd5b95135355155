"""Align's clicked control points in a real browser (``pages/5_Align.py``, ``ui/align_page.py``; the AppTest side with
a stand-in canvas is ``tests/test_align_pending_points.py``): a real ``streamlit run app.py`` in headless system
Chromium, the real streamlit-drawable-canvas (a components-v2 element in a shadow root, not an iframe).

Points clicked with the mouse on the label and image canvases and not yet added to the table survive a visit to
another page through the sidebar: the canvases draw them again (their pixels are the point tool's magenta), the page
counts them and offers to add them, and a point clicked on a restored canvas joins them (the restored points are in
the canvas' own drawing, not only in the page's count). "Add" puts them in the table, once: the canvases after the
next visit are empty. "Clear" empties restored points, for good.

The page's "Restored the points you clicked here before …" caption stays once the canvases have painted: a mounted
canvas reports its background fit at once (a rerun), and the caption used to vanish with that rerun (0.2 s).
"""
from __future__ import annotations

import re
import sys
import time

import pytest
from conftest import ROOT, app_errors, run_app, wait_app_idle

pytestmark = pytest.mark.browser

# canvas CSS px (the synthetic images are smaller than the column, so shown at scale 1: canvas px = image px)
LABEL_PTS = [(40, 30), (150, 120)]
IMAGE_PTS = [(60, 50), (240, 200)]
LABEL_MORE, IMAGE_MORE, LABEL_EXTRA = (100, 60), (150, 100), (60, 130)
LOAD_MS = 90_000  # page loads on a slow 2-core machine


@pytest.fixture
def align_app(chromium_browser, tmp_path):
    """A fresh ``streamlit run app.py`` on an empty workspace, and a 200x160 hz20 label with a 300x250 image of it."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_align import homography, render_image, synthetic_label

    from seghz.classes import get_scheme
    from seghz.data.io import write_index_mask, write_rgb
    from seghz.store import Workspace

    lbl = synthetic_label(160, 200, seed=5, classes=8)
    img = render_image(lbl, homography(), (250, 300), seed=5)
    lp, ip = tmp_path / "label.png", tmp_path / "image.png"
    write_index_mask(lp, lbl, get_scheme("hz20"))
    write_rgb(ip, img)
    ws = Workspace(tmp_path / "ws")
    with run_app(ws.root, tmp_path / "app") as url:
        yield url, lp, ip


def canvas(page, side: str, layer: str = "upper"):
    """The ``side`` ("label" / "image") click canvas' fabric layer: "upper" takes the mouse, "lower" draws the
    objects. The element's key names the side (``AP.canvas_key``)."""
    return page.locator(f"[class*='st-key-al_canvas_{side}_'] canvas.dc-canvas.{layer}-canvas")


def one_canvas_each(page) -> None:
    """Wait for exactly one canvas per side: after "Add"/"Clear" a rerun can briefly show the old beside the new."""
    from playwright.sync_api import expect

    for side in ("label", "image"):
        element = page.locator(f"[class*='st-key-al_canvas_{side}_']")
        expect(element).to_have_count(1, timeout=LOAD_MS)
        for layer in ("canvas.dc-canvas.upper-canvas", "canvas.dc-canvas.lower-canvas", "canvas.dc-background-canvas"):
            expect(element.locator(layer)).to_have_count(1, timeout=LOAD_MS)


def expect_counts(page, n_label: int, n_image: int) -> None:
    """The page's "<side>: N point(s) clicked" captions (one each) say ``n_label`` and ``n_image``."""
    from playwright.sync_api import expect

    for side, n in (("label", n_label), ("image", n_image)):
        cap = page.get_by_text(re.compile(rf"^{side}: \d+ point\(s\) clicked$"))
        expect(cap).to_have_text(f"{side}: {n} point(s) clicked", timeout=LOAD_MS)
        expect(cap).to_have_count(1, timeout=LOAD_MS)
    wait_app_idle(page, LOAD_MS)


def click_point(page, side: str, xy: tuple[int, int]) -> None:
    """A mouse click on canvas pixel ``xy`` of the ``side`` canvas (the page's point tool is on by default)."""
    target = canvas(page, side)
    target.scroll_into_view_if_needed()
    box = target.bounding_box()
    assert box is not None, f"the {side} canvas is not shown"
    page.mouse.click(box["x"] + xy[0] + 0.5, box["y"] + xy[1] + 0.5)


def drawn(page, side: str, pts) -> list[bool]:
    """For each canvas pixel of ``pts``: does the canvas draw a point there (the point tool's magenta, in the 3x3
    pixels around it, on the objects layer; the background image is on another canvas)?"""
    return canvas(page, side, "lower").evaluate(
        """(c, pts) => {
            const k = c.width / c.clientWidth, ctx = c.getContext('2d');
            return pts.map(([x, y]) => {
                const d = ctx.getImageData(Math.round(x * k) - 1, Math.round(y * k) - 1, 3, 3).data;
                for (let i = 0; i < d.length; i += 4)
                    if (d[i] > 200 && d[i + 1] < 80 && d[i + 2] > 200 && d[i + 3] > 0) return true;
                return false;
            });
        }""",
        [list(p) for p in pts],
    )


def expect_drawn(page, side: str, pts, want: bool) -> None:
    """The ``side`` canvas draws a point at each of ``pts`` (``want``) or at none of them. Checked once the canvas
    has painted its background image: it loads its initial drawing in the same update, and the image takes longer."""
    page.locator(f"[class*='st-key-al_canvas_{side}_'] canvas.dc-background-canvas").evaluate(
        """(c, limit) => new Promise((done, fail) => {
            const t0 = Date.now();
            const look = () => {
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                for (let i = 3; i < d.length; i += 4 * 97) if (d[i] > 0) return done(true);
                if (Date.now() - t0 > limit) return fail(new Error('the background image was never painted'));
                setTimeout(look, 100);
            };
            look();
        })""",
        LOAD_MS,
    )
    deadline = time.monotonic() + LOAD_MS / 1000
    got = drawn(page, side, pts)
    while got != [want] * len(pts) and time.monotonic() < deadline:
        page.wait_for_timeout(200)
        got = drawn(page, side, pts)
    assert got == [want] * len(pts), f"{side} canvas: points drawn at {list(pts)}: {got}, expected all {want}"


def round_trip(page) -> None:
    """To Home through the sidebar and back to Align: a new run of the page after another page's run."""
    page.locator("[data-testid='stSidebarNavLink']", has_text="Home").first.click()
    page.get_by_text("Start here").first.wait_for(timeout=LOAD_MS)
    wait_app_idle(page, LOAD_MS)
    page.locator("[data-testid='stSidebarNavLink']", has_text="Align").first.click()
    page.locator("[data-testid='stMain'] h1", has_text="Align").first.wait_for(timeout=LOAD_MS)
    wait_app_idle(page, LOAD_MS)
    one_canvas_each(page)


def table_rows(page) -> list[list[float]]:
    """The control-point table's rows (label_x, label_y, image_x, image_y), read from the data editor's
    accessible table."""
    from playwright.sync_api import expect

    editor = page.locator("[class*='st-key-al_editor_'] table")
    expect(editor).to_have_count(1, timeout=LOAD_MS)
    cells = editor.evaluate("t => [...t.tBodies[0].rows].map(r => [...r.cells].map(c => c.innerText.trim()))")
    return [[float(v) for v in row[-4:]] for row in cells if any(row)]


def button(page, name: str):
    from playwright.sync_api import expect

    b = page.get_by_role("button", name=name)
    expect(b).to_have_count(1, timeout=LOAD_MS)
    return b


def test_clicked_points_come_back_after_another_page_then_add_and_clear(align_app, chromium_browser):
    from playwright.sync_api import expect

    url, lp, ip = align_app
    ctx = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.set_default_timeout(LOAD_MS)
    try:
        page.goto(f"{url}/Align", wait_until="domcontentloaded")
        page.locator("[data-testid='stMain'] h1", has_text="Align").first.wait_for()
        wait_app_idle(page, LOAD_MS)
        for label, path in (("Label file (palette RGB or id mask)", lp), ("Imagery (PNG / JPEG / GeoTIFF)", ip)):
            box = page.get_by_label(label, exact=True)
            box.fill(str(path))
            box.press("Enter")
            wait_app_idle(page, LOAD_MS)
        page.get_by_text("similarity", exact=True).first.click()  # 2 pairs make a fit: the table's rows are counted
        wait_app_idle(page, LOAD_MS)
        page.get_by_text("Click control points on the two images", exact=True).first.click()
        wait_app_idle(page, LOAD_MS)
        one_canvas_each(page)
        expect_counts(page, 0, 0)
        assert canvas(page, "label").bounding_box()["width"] == 200  # shown at scale 1 (the points are image px)
        assert canvas(page, "image").bounding_box()["width"] == 300

        # two pairs, clicked label, image, label, image (each click is a run of the page)
        for i in range(2):
            click_point(page, "label", LABEL_PTS[i])
            expect_counts(page, i + 1, i)
            click_point(page, "image", IMAGE_PTS[i])
            expect_counts(page, i + 1, i + 1)
        expect_drawn(page, "label", LABEL_PTS, True)
        expect_drawn(page, "image", IMAGE_PTS, True)

        # another page and back: the canvases are new ones, drawn from the kept points
        round_trip(page)
        expect_counts(page, 2, 2)
        expect_drawn(page, "label", LABEL_PTS, True)
        expect_drawn(page, "image", IMAGE_PTS, True)
        expect(button(page, "Add the 2 clicked pair(s)")).to_be_enabled()
        expect(button(page, "Clear the clicked points")).to_be_enabled()
        assert table_rows(page) == []
        # said after the canvases painted and reported (their rerun has run: the points are drawn)
        expect(page.get_by_text("Restored the points you clicked here before (2 on the label, 2 on the image)")
               ).to_have_count(1)

        # Add: the two pairs go into the table, at the clicked pixels; new, empty canvases
        button(page, "Add the 2 clicked pair(s)").click()
        page.get_by_text(re.compile(r"Manual similarity: RMSE .* on 2 points")).first.wait_for(timeout=LOAD_MS)
        one_canvas_each(page)
        expect_counts(page, 0, 0)
        rows = table_rows(page)
        assert len(rows) == 2, rows
        for row, lxy, ixy in zip(rows, LABEL_PTS, IMAGE_PTS):
            # the browser reports whole CSS px: within a pixel of the one clicked
            assert all(abs(v - want) <= 1.0 for v, want in zip(row, (*lxy, *ixy))), (rows, LABEL_PTS, IMAGE_PTS)
        expect_drawn(page, "label", LABEL_PTS, False)
        expect_drawn(page, "image", IMAGE_PTS, False)
        expect(button(page, "Add the 0 clicked pair(s)")).to_be_disabled()

        # and after another visit: still empty (added points are not restored, nor added twice)
        round_trip(page)
        expect_counts(page, 0, 0)
        expect_drawn(page, "label", LABEL_PTS, False)
        expect_drawn(page, "image", IMAGE_PTS, False)
        assert len(table_rows(page)) == 2
        expect(button(page, "Clear the clicked points")).to_be_disabled()

        # Clear: one more pair clicked, kept across a visit, a point added on the restored canvas, then cleared
        click_point(page, "label", LABEL_MORE)
        expect_counts(page, 1, 0)
        click_point(page, "image", IMAGE_MORE)
        expect_counts(page, 1, 1)
        round_trip(page)
        expect_counts(page, 1, 1)
        expect_drawn(page, "label", [LABEL_MORE], True)
        expect_drawn(page, "image", [IMAGE_MORE], True)
        click_point(page, "label", LABEL_EXTRA)  # the restored point is in the canvas' drawing: 2, not 1
        expect_counts(page, 2, 1)
        expect_drawn(page, "label", [LABEL_MORE, LABEL_EXTRA], True)
        button(page, "Clear the clicked points").click()
        one_canvas_each(page)
        expect_counts(page, 0, 0)
        expect(button(page, "Clear the clicked points")).to_be_disabled()
        expect_drawn(page, "label", [LABEL_MORE, LABEL_EXTRA], False)
        expect_drawn(page, "image", [IMAGE_MORE], False)
        round_trip(page)
        expect_counts(page, 0, 0)
        expect_drawn(page, "label", [LABEL_MORE, LABEL_EXTRA], False)
        expect_drawn(page, "image", [IMAGE_MORE], False)
        assert not page.get_by_text("Restored the points you clicked").count()
        assert len(table_rows(page)) == 2  # Clear leaves the table alone
        assert not app_errors(page), app_errors(page)
    finally:
        ctx.close()

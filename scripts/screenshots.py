"""Screenshots of every page for the README: `python scripts/screenshots.py` (needs /usr/bin/chromium).

Starts `streamlit run app.py` on a fresh temporary workspace (the synthetic demo + shipped checkpoints),
drives each page in headless Chromium and writes docs/screenshots/<page>.png.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "browser"))
sys.path.insert(0, str(ROOT))
from conftest import CHROMIUM, CHROMIUM_ARGS, draw_centre_rectangle, full_screenshot, open_map, run_app

OUT = ROOT / "docs" / "screenshots"


def synthetic_alignment_pair(folder: Path) -> tuple[Path, Path]:
    """A 384 px synthetic demo label (hz7 palette) and its image resampled 1.3× larger, rotated 3° and shifted."""
    import cv2

    from seghz.classes import get_scheme
    from seghz.data.io import write_rgb
    from seghz.demo import generate_scene

    rgb, lbl = generate_scene(384, 11)
    M = cv2.getRotationMatrix2D((192, 192), 3.0, 1.3)
    M[:, 2] += (40, 25)
    img = cv2.warpAffine(rgb, M, (560, 540), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    write_rgb(folder / "align_label.png", get_scheme("hz7").colorize(lbl))
    write_rgb(folder / "align_image.png", img)
    return folder / "align_label.png", folder / "align_image.png"


def main() -> int:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, run_app(Path(tmp) / "ws", Path(tmp) / "app", demo=True) as url:
        with sync_playwright() as pw:
            b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            page = b.new_page(viewport={"width": 1400, "height": 1000})

            def shot(path: str, name: str, ready: str, click: str | None = None, after: str | None = None) -> None:
                page.goto(f"{url}/{path}")
                page.get_by_text(ready, exact=False).first.wait_for(timeout=120_000)
                if click:
                    page.wait_for_timeout(3000)  # a click before the page has settled can be lost in its rerun
                    page.get_by_role("button", name=click).first.click()
                    page.get_by_text(after, exact=False).first.wait_for(timeout=300_000)
                    page.mouse.move(5, 995)  # off the button: its tooltip would otherwise be in the picture
                page.wait_for_timeout(2500)
                full_screenshot(page, OUT / f"{name}.png")
                print("wrote", OUT / f"{name}.png")

            shot("", "home", "Active checkpoint")
            # Home's scenes table with the study's validation split proposed (the moves and what they do)
            page.get_by_text("Scenes (4)", exact=False).first.click()
            page.wait_for_timeout(1500)  # the expander opening: a click on its button before then can be lost
            page.get_by_role("button", name="Propose a validation split").first.click()
            page.get_by_text("Proposed val:", exact=False).first.wait_for(timeout=60_000)
            page.wait_for_timeout(2000)
            page.get_by_text("Scenes (4)", exact=False).first.scroll_into_view_if_needed()
            page.mouse.move(5, 995)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(OUT / "home_scenes.png"))
            print("wrote", OUT / "home_scenes.png")
            shot("Evaluate", "evaluate", "Run evaluation", "Run evaluation", "fwIoU")
            page.get_by_text("Calibration: how far", exact=False).first.scroll_into_view_if_needed()
            page.mouse.wheel(0, 250)  # the section's heading, metrics and both figures in one viewport
            page.wait_for_timeout(2500)
            page.screenshot(path=str(OUT / "evaluate_calibration.png"))
            print("wrote", OUT / "evaluate_calibration.png")
            shot("Labels", "labels", "Predict this window", "Predict this window", "Agrees with the label")
            shot("Train", "train", "Launch training")
            # Map: draw a rectangle over the middle of the default scene (the demo town), predict with D4 TTA
            frame = open_map(page, url, timeout_ms=120_000)
            draw_centre_rectangle(page, frame, 160, 120)
            page.get_by_text("Drawn region:", exact=False).first.wait_for(timeout=60_000)
            page.get_by_text("d4 (8 views)", exact=True).first.click()
            page.get_by_role("button", name="Predict region").click()
            frame.wait_for_selector("img.leaflet-image-layer", timeout=300_000)
            page.get_by_text("entropy", exact=True).first.click()  # the entropy layer with its legend
            page.get_by_text("nats", exact=False).first.wait_for(timeout=60_000)
            page.wait_for_timeout(3000)
            full_screenshot(page, OUT / "map.png")
            print("wrote", OUT / "map.png")
            # Align: a synthetic demo label and the same scene's image scaled and rotated (never the real airport data)
            lbl_file, img_file = synthetic_alignment_pair(Path(tmp))
            page.goto(f"{url}/Align")
            page.get_by_label("Label file (palette RGB or id mask)").fill(str(lbl_file))
            page.get_by_label("Label file (palette RGB or id mask)").press("Enter")
            page.get_by_label("Imagery (PNG / JPEG / GeoTIFF)").fill(str(img_file))
            page.get_by_label("Imagery (PNG / JPEG / GeoTIFF)").press("Enter")
            page.wait_for_timeout(2000)
            page.locator(".st-key-al_scheme").click()
            page.get_by_role("option", name="hz7").click()
            page.get_by_text("Local (non-rigid) refinement", exact=True).click()
            page.get_by_role("button", name="Automatic matching").click()
            page.get_by_text("after: automatic", exact=False).first.wait_for(timeout=300_000)
            page.wait_for_timeout(2500)
            page.get_by_text("after: automatic", exact=False).first.scroll_into_view_if_needed()
            page.mouse.wheel(0, 250)
            page.wait_for_timeout(1000)
            full_screenshot(page, OUT / "align.png")
            print("wrote", OUT / "align.png")
            b.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

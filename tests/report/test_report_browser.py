"""The report in a real browser (headless Chromium): no console error, every image decoded, the sections there."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from skinkeras.report.browser import check_page, find_browser
from skinkeras.report.html import MAIN_SECTIONS

needs_browser = pytest.mark.skipif(find_browser() is None,
                                   reason="no Chromium here (apt-get install chromium); the browser test skips")


@needs_browser
def test_demo_report_renders_in_chromium(tiny_demo, tmp_path):
    out, _ = tiny_demo
    shot = tmp_path / "report.png"
    seen = check_page(out / "report.html", screenshot=str(shot))
    assert seen.console_errors == []
    assert len(seen.images) >= 10 and seen.broken_images == []
    expected = {"data", "curves", "confusion", "roc", "per-class", "trust", "worst", "gradcam"}
    assert set(MAIN_SECTIONS) | expected <= set(seen.sections)
    # Laptop width: nothing forces a horizontal scroll bar.
    assert seen.width <= 1366
    picture = np.asarray(Image.open(shot).convert("L"), np.float32)
    # The page is as wide as the viewport less its scroll bar, taller than one screen, and not blank.
    assert 1300 <= picture.shape[1] <= 1366 and picture.shape[0] >= 768 and picture.std() > 10
    keep = os.environ.get("SKINKERAS_TEST_ARTIFACTS")
    if keep:  # CI or a developer may keep the screenshot to look at
        os.makedirs(keep, exist_ok=True)
        shutil.copy(shot, os.path.join(keep, "demo-report.png"))


@needs_browser
def test_the_check_sees_broken_images_and_console_errors(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!doctype html><title>t</title><section id="a"><img alt="gone" src="missing.png"></section>'
                    '<script>console.error("boom")</script>')
    seen = check_page(page)
    assert seen.sections == ["a"] and [img["alt"] for img in seen.broken_images] == ["gone"]
    assert any("boom" in e for e in seen.console_errors) and any("missing.png" in e for e in seen.console_errors)

"""`ois app`'s page in headless Chromium through Selenium: clicks, undo and save, the threshold of a new image, a
status line that wraps without moving the image, clicks queued while the model runs, the checkpoint line, map
legends and the maps beside the image in a 1024 px wide window."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ois_lightning.app.session import decode_image

from .test_app import CLICKS, CountingAdapter, ckpt, reference_masks, save_png, scene, serving  # noqa: F401

CHROMIUM = os.environ.get("OIS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("OIS_CHROMEDRIVER", "/usr/bin/chromedriver")
WINDOW = (1024, 768)  # a laptop screen: the maps must sit beside the image, above the fold


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium driven by the system chromedriver (Selenium Manager never downloads), saving to tmp."""
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(f"no {CHROMIUM} / {CHROMEDRIVER}: `make browser` (as root: apt-get install chromium "
                    "chromium-driver), or set OIS_CHROMIUM / OIS_CHROMEDRIVER")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=%d,%d" % WINDOW):
        options.add_argument(flag)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        yield driver, downloads
    finally:
        driver.quit()


def wait_for(driver, condition: str, timeout: float = 60) -> None:
    """Until the page is idle and the JS ``condition`` on ``ois`` (the page's state) holds."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(f"return !ois.busy && ({condition});"))


def canvas_pixels(driver, canvas: str = "mask") -> tuple[str, int]:
    """A canvas layer as a PNG data URL and its count of drawn (non-transparent) pixels."""
    return driver.execute_script(
        f"const c = document.getElementById('{canvas}'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height);"
        "let n = 0; for (let i = 3; i < d.data.length; i += 4) n += d.data[i] > 0;"
        "return [c.toDataURL(), n];")


def click_image(driver, y: float, x: float, positive: bool = True, element: str = "clicks") -> None:
    """A left (positive) or right (negative) click at fraction (y, x) of ``element``'s displayed box."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    target = driver.find_element(By.ID, element)
    w, h = target.size["width"], target.size["height"]
    chain = ActionChains(driver).move_to_element_with_offset(target, int((x - 0.5) * w), int((y - 0.5) * h))
    (chain.click() if positive else chain.context_click()).perform()


def open_image(driver, name: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "images")).select_by_value(name)
    wait_for(driver, f"ois.state.name === {json.dumps(name)}")


def rect(driver, element: str) -> dict:
    return driver.execute_script(f"return document.getElementById('{element}').getBoundingClientRect().toJSON();")


def downloaded(path: Path, timeout: float = 30) -> np.ndarray:
    deadline = time.monotonic() + timeout
    while not path.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    return np.asarray(Image.open(path))


def screenshot(driver, name: str) -> None:
    """docs/img/app_<name>.png when OIS_APP_SCREENSHOTS names the folder (docs/app.md shows them)."""
    if folder := os.environ.get("OIS_APP_SCREENSHOTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"app_{name}.png"))


@pytest.mark.parametrize("source", ["grabcut", "generated"])
def test_browser_clicks_undo_and_save(source, ckpt, browser, tmp_path, request):  # noqa: F811
    """Clicks in the page give masks on the overlay; undo restores the previous one; the saved PNG is the
    Predictor's mask for the same clicks."""
    from selenium.webdriver.common.by import By

    driver, downloads = browser
    if source == "grabcut":
        root = request.getfixturevalue("grabcut_root") / "data_GT"
        name = sorted(p.name for p in root.glob("*.jpg"))[0]
    else:
        root, name = tmp_path / "images", "scene.png"
        save_png(root / name, scene(300, 400))
    image = decode_image((root / name).read_bytes())[0]
    with serving(ckpt, root) as server:
        driver.get(server.url)
        wait_for(driver, "ois.renders >= 1")
        open_image(driver, name)
        overlays = []
        for k, (y, x, positive) in enumerate(CLICKS, 1):
            click_image(driver, y, x, positive)
            wait_for(driver, f"ois.state.clicks.length === {k}")
            overlays.append(canvas_pixels(driver))
            assert overlays[-1][1] == driver.execute_script("return ois.state.mask_pixels;")
        assert 0 < overlays[0][1] < 0.9 * image.shape[0] * image.shape[1]  # a mask after one click
        assert overlays[1] != overlays[2]
        clicks = driver.execute_script("return ois.state.clicks;")
        h, w = image.shape[:2]
        assert [c["positive"] for c in clicks] == [c[2] for c in CLICKS]
        assert all(abs(c["y"] - y * h) <= 2 and abs(c["x"] - x * w) <= 2 for c, (y, x, _) in zip(clicks, CLICKS))
        if source == "grabcut":
            screenshot(driver, "clicks")

        driver.find_element(By.ID, "save").click()
        saved = downloaded(downloads / f"{Path(name).stem}_mask.png")
        assert np.array_equal(saved > 127, reference_masks(ckpt, image, clicks)[-1])

        driver.find_element(By.ID, "undo").click()
        wait_for(driver, "ois.state.clicks.length === 2")
        assert canvas_pixels(driver) == overlays[1] and server.session.model.calls == 3
        assert driver.execute_script("return ois.state.mask_pixels;") == overlays[1][1]


def test_browser_threshold_status_line_info_and_layout(ckpt, browser, tmp_path):  # noqa: F811
    """A new image opens at the checkpoint's threshold (not the slider's last value); a status line that wraps
    does not move the image; the checkpoint line, the legends and the maps beside the image at 1024 px."""
    driver, _ = browser
    long_name = "a_photo_with_a_rather_long_file_name_" * 4 + ".png"  # the status line wraps after a click
    save_png(tmp_path / "scene.png", scene(300, 400))
    save_png(tmp_path / long_name, scene(300, 400))
    with serving(ckpt, tmp_path) as server:
        default = server.session.model.threshold
        driver.get(server.url)
        wait_for(driver, "ois.renders >= 1")
        open_image(driver, "scene.png")
        info = driver.execute_script("return document.getElementById('info').textContent;")
        assert "tiny.ckpt" in info and f"threshold {default:.2f}" in info and "resize letterbox" in info
        assert f"input {server.session.model.predictor.input_size}" in info
        stage_top, image_top = rect(driver, "stage")["top"], rect(driver, "clicks")["top"]

        driver.execute_script("const t = document.getElementById('threshold'); t.value = 0.8;"
                              "t.dispatchEvent(new Event('input'));")
        click_image(driver, 0.5, 0.5)
        wait_for(driver, "ois.state.clicks.length === 1 && ois.state.threshold === 0.8")
        depth, aside = rect(driver, "depth"), rect(driver, "order")
        assert depth["left"] >= rect(driver, "stage")["right"] and aside["left"] == depth["left"]  # beside it
        assert depth["bottom"] <= driver.execute_script("return window.innerHeight;")  # above the fold
        legends = driver.execute_script("return [...document.querySelectorAll('.legend')].map((l) => l.textContent);")
        assert len(legends) == 2 and all(any(ch.isdigit() for ch in text) for text in legends)  # depth, positive

        open_image(driver, long_name)
        assert driver.execute_script("return ois.state.threshold;") == default
        assert driver.execute_script("return document.getElementById('threshold').value;") == f"{default:g}"
        click_image(driver, 0.5, 0.5)
        wait_for(driver, "ois.state.clicks.length === 1")
        assert driver.execute_script("return document.getElementById('status').getClientRects().length;") >= 2
        assert (rect(driver, "stage")["top"], rect(driver, "clicks")["top"]) == (stage_top, image_top)


class SlowAdapter(CountingAdapter):
    """The real adapter taking 0.6 s more per click: the next clicks arrive while one runs."""

    def predict(self, *args, **kw):
        time.sleep(0.6)
        return super().predict(*args, **kw)


def test_browser_clicks_during_a_request_are_queued(ckpt, browser, tmp_path):  # noqa: F811
    driver, _ = browser
    save_png(tmp_path / "scene.png", scene(300, 400))
    with serving(ckpt, tmp_path, SlowAdapter) as server:
        driver.get(server.url)
        wait_for(driver, "ois.renders >= 1")
        open_image(driver, "scene.png")
        for y, x, positive in CLICKS:
            click_image(driver, y, x, positive)
        pending = driver.execute_script("return document.getElementById('pending').textContent;")
        assert "queued" in pending  # visible while the first click runs
        wait_for(driver, f"ois.state.clicks.length === {len(CLICKS)}")
        clicks = driver.execute_script("return ois.state.clicks;")
        assert [c["positive"] for c in clicks] == [c[2] for c in CLICKS] and server.session.model.calls == 3
        assert driver.execute_script("return document.getElementById('pending').textContent;") == ""

"""`ois app`: the JSON API, its security defaults, and the page driven in headless Chromium through Selenium."""
from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from ois_lightning.app import AppServer, ModelAdapter, Session
from ois_lightning.app.session import decode_image, list_images
from ois_lightning.cli import build_parser
from ois_lightning.checkpoint import load_checkpoint

from .helpers import randomize_, save_checkpoint


CHROMIUM = os.environ.get("OIS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("OIS_CHROMEDRIVER", "/usr/bin/chromedriver")
CLICKS = [(0.5, 0.5, True), (0.3, 0.35, True), (0.85, 0.1, False)]  # (y, x) as image fractions, positive


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """The tiny random OIS model in the Lightning layout, depth from its own head; weights spread out by
    ``randomize_`` so that masks cover part of the image and change from click to click."""
    path = save_checkpoint(tmp_path_factory.mktemp("app") / "tiny.ckpt", "data.depth.source=model")
    model, _ = load_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["state_dict"] = {"model." + k: v for k, v in randomize_(model, seed=3).state_dict().items()}
    torch.save(checkpoint, path)
    return path


def scene(h: int = 150, w: int = 200) -> np.ndarray:
    """A generated RGB image: a bright disc on a grey gradient."""
    yy, xx = np.mgrid[:h, :w]
    image = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 90)], -1).astype(np.uint8)
    image[(yy - h // 2) ** 2 + (xx - w // 2) ** 2 < (h // 4) ** 2] = (240, 200, 40)
    return image


def save_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


class CountingAdapter(ModelAdapter):
    """The real adapter, counting model calls (undo and the threshold slider must not make any)."""

    calls = 0

    def predict(self, *args, **kw):
        self.calls += 1
        return super().predict(*args, **kw)


@contextlib.contextmanager
def serving(ckpt: Path, images: Path | None) -> Iterator[AppServer]:
    """The app on a free 127.0.0.1 port, served from a thread."""
    server = AppServer(Session(CountingAdapter.from_checkpoint(ckpt, device="cpu"), images), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def call(server: AppServer, path: str, body: dict | None = None, headers: dict | None = None,
         raw: bytes | None = None) -> tuple[int, bytes]:
    """One request: GET, or POST of ``body`` as JSON (or of ``raw`` bytes with ``headers``)."""
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    headers = headers or ({"Content-Type": "application/json"} if body is not None else {})
    conn.request("GET" if data is None else "POST", path, data, headers)
    response = conn.getresponse()
    return response.status, response.read()


def reference_masks(ckpt: Path, image: np.ndarray, clicks: list[dict]) -> list[np.ndarray]:
    """The Predictor's mask after each click, fed its previous mask as the app does."""
    from ois_lightning.protocol.predictor import Predictor

    p = Predictor.from_checkpoint(ckpt, device="cpu")
    p.set_image(image)
    masks, prev = [], None
    for k in range(1, len(clicks) + 1):
        points = np.array([(c["y"], c["x"]) for c in clicks[:k]])
        prev, _ = p.predict(points, np.array([int(c["positive"]) for c in clicks[:k]]), prev)
        masks.append(prev)
    return masks


def test_bind_address_defaults_to_loopback(ckpt):
    args = build_parser().parse_args(["app", "--ckpt", "x.ckpt"])
    assert (args.host, args.port, args.images) == ("127.0.0.1", 7860, None)
    with serving(ckpt, None) as server:
        assert server.server_address[0] == "127.0.0.1" and not server.any_host
        assert call(server, "/", headers={"Host": "evil.example:7860"})[0] == 403  # DNS rebinding
        status, page = call(server, "/")
        assert status == 200 and b'id="clicks"' in page


def test_files_outside_images_are_refused(ckpt, tmp_path):
    root = tmp_path / "images"
    save_png(root / "a.png", scene())
    save_png(root / "sub" / "b.png", scene(40, 50))
    secret = save_png(tmp_path / "secret.png", scene(30, 30))
    (root / "link.png").symlink_to(secret)
    (root / "sub" / "inner.png").symlink_to(root / "a.png")
    assert list_images(root) == ["a.png", "sub/b.png", "sub/inner.png"]
    with serving(ckpt, root) as server:
        for name in ("../secret.png", str(secret), "link.png", "sub/../../secret.png", "/etc/passwd"):
            status, body = call(server, "/api/open", {"name": name})
            assert status == 403 and body.count(b"\n") == 1 and body.startswith(b"forbidden"), name
        assert call(server, "/api/open", {"name": "missing.png"})[0] == 404
        assert call(server, "/../secret.png")[0] == 404  # no path of the URL maps to a file
        for name, size in (("sub/b.png", [40, 50]), ("sub/inner.png", [150, 200])):
            status, body = call(server, "/api/open", {"name": name})
            assert status == 200 and json.loads(body)["size"] == size
    with serving(ckpt, None) as server:
        assert call(server, "/api/open", {"name": "a.png"})[0] == 403


def test_api_click_undo_threshold_reset_save(ckpt, tmp_path):
    image = scene()
    save_png(tmp_path / "a.png", image)
    with serving(ckpt, tmp_path) as server:
        session, model = server.session, server.session.model
        assert call(server, "/api/click", {"y": 5, "x": 5})[0] == 400  # no image yet
        assert call(server, "/api/open", {"name": "a.png"})[0] == 200
        assert call(server, "/api/click", {"y": 150, "x": 5})[0] == 400  # outside the image
        assert call(server, "/api/click", raw=b"{", headers={"Content-Type": "application/json"})[0] == 400
        assert call(server, "/api/undo", raw=b"{}", headers={"Content-Type": "text/plain"})[0] == 400
        states, masks = [], []
        for y, x, positive in CLICKS:
            status, body = call(server, "/api/click", {"y": int(y * 150), "x": int(x * 200), "positive": positive})
            assert status == 200
            states.append(json.loads(body))
            masks.append(session.mask().copy())
        assert model.calls == 3 and [c["positive"] for c in states[-1]["clicks"]] == [True, True, False]
        assert 0 < masks[0].mean() < 0.9 and not np.array_equal(masks[1], masks[2])  # undo can be told apart
        assert states[-1]["latency_ms"] >= 0 and states[-1]["depth"].startswith("data:image/png;base64,")
        assert [m["label"] for m in states[-1]["order"]] == ["positive", "negative 1"]
        want = reference_masks(ckpt, image, states[-1]["clicks"])
        assert all(np.array_equal(a, b) for a, b in zip(masks, want))
        status, png = call(server, "/api/save")
        assert status == 200 and np.array_equal(np.asarray(Image.open(io.BytesIO(png))) > 127, masks[2])

        assert json.loads(call(server, "/api/undo", {})[1]) == states[1]
        assert np.array_equal(session.mask(), masks[1]) and model.calls == 3  # restored, not recomputed
        prob, value = session.current.prob, float(np.quantile(session.current.prob, 0.5))
        state = json.loads(call(server, "/api/threshold", {"value": value})[1])
        assert state["threshold"] == value and model.calls == 3
        assert np.array_equal(session.mask(), prob > value) and state["mask_pixels"] == int((prob > value).sum())
        assert call(server, "/api/threshold", {"value": 2})[0] == 400
        state = json.loads(call(server, "/api/reset", {})[1])
        assert state["clicks"] == [] and state["overlay"] is None and not session.mask().any()


def test_upload_opens_an_image_without_images_folder(ckpt):
    buf = io.BytesIO()
    Image.fromarray(scene(60, 80)).save(buf, format="PNG")
    with serving(ckpt, None) as server:
        assert call(server, "/api/upload", raw=b"not an image", headers={"Content-Type": "image/png"})[0] == 400
        status, body = call(server, "/api/upload", raw=buf.getvalue(), headers={"Content-Type": "image/png"})
        assert status == 200 and json.loads(body)["size"] == [60, 80]
        assert np.array_equal(decode_image(call(server, "/api/image")[1])[0], scene(60, 80))


# --- the page in headless Chromium ------------------------------------------------------------------------------
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
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,900"):
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


def mask_canvas(driver) -> tuple[str, int]:
    """The overlay canvas as a PNG data URL and its count of drawn (non-transparent) pixels."""
    return driver.execute_script(
        "const c = document.getElementById('mask'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height);"
        "let n = 0; for (let i = 3; i < d.data.length; i += 4) n += d.data[i] > 0;"
        "return [c.toDataURL(), n];")


def click_image(driver, y: float, x: float, positive: bool) -> None:
    """A left (positive) or right (negative) click at image pixel fraction (y, x) of the displayed canvas."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "clicks")
    w, h = canvas.size["width"], canvas.size["height"]
    chain = ActionChains(driver).move_to_element_with_offset(canvas, int((x - 0.5) * w), int((y - 0.5) * h))
    (chain.click() if positive else chain.context_click()).perform()


@pytest.mark.parametrize("source", ["grabcut", "generated"])
def test_browser_clicks_undo_and_save(source, ckpt, browser, tmp_path, request):
    """Clicks in the page give masks on the overlay; undo restores the previous one; the saved PNG is the
    Predictor's mask for the same clicks."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

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
        Select(driver.find_element(By.ID, "images")).select_by_value(name)
        wait_for(driver, f"ois.state.name === {json.dumps(name)}")
        overlays = []
        for k, (y, x, positive) in enumerate(CLICKS, 1):
            click_image(driver, y, x, positive)
            wait_for(driver, f"ois.state.clicks.length === {k}")
            overlays.append(mask_canvas(driver))
            assert overlays[-1][1] == driver.execute_script("return ois.state.mask_pixels;")
        assert 0 < overlays[0][1] < 0.9 * image.shape[0] * image.shape[1]  # a mask after one click
        assert overlays[1] != overlays[2]
        clicks = driver.execute_script("return ois.state.clicks;")
        h, w = image.shape[:2]
        assert [c["positive"] for c in clicks] == [c[2] for c in CLICKS]
        assert all(abs(c["y"] - y * h) <= 2 and abs(c["x"] - x * w) <= 2 for c, (y, x, _) in zip(clicks, CLICKS))
        if os.environ.get("OIS_APP_SCREENSHOT") and source == "grabcut":
            driver.save_screenshot(os.environ["OIS_APP_SCREENSHOT"])

        driver.find_element(By.ID, "save").click()
        saved = downloads / f"{Path(name).stem}_mask.png"
        deadline = time.monotonic() + 30
        while not saved.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert np.array_equal(np.asarray(Image.open(saved)) > 127, reference_masks(ckpt, image, clicks)[-1])

        driver.find_element(By.ID, "undo").click()
        wait_for(driver, "ois.state.clicks.length === 2")
        assert mask_canvas(driver) == overlays[1] and server.session.model.calls == 3
        assert driver.execute_script("return ois.state.mask_pixels;") == overlays[1][1]

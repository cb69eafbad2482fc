"""`ois app`: the JSON API and its security defaults, without a browser (the page: tests/test_app_browser.py)."""
from __future__ import annotations

import contextlib
import http.client
import io
import json
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from ois_lightning.app import AppServer, ModelAdapter, Session
from ois_lightning.app.session import decode_image, list_images
from ois_lightning.cli import build_parser
from ois_lightning.config.schema import ConfigError
from ois_lightning.checkpoint import load_checkpoint

from .helpers import randomize_, save_checkpoint


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
def serving(ckpt: Path, images: Path | None, adapter: type[ModelAdapter] = CountingAdapter) -> Iterator[AppServer]:
    """The app on a free 127.0.0.1 port, served from a thread."""
    server = AppServer(Session(adapter.from_checkpoint(ckpt, device="cpu"), images), port=0)
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
        depth = states[-1]["depth"]
        assert states[-1]["latency_ms"] >= 0 and depth["png"].startswith("data:image/png;base64,")
        assert depth["cmap"] == "magma" and 0 <= depth["lo"] < depth["hi"] <= 1  # the legend's range
        assert all(len(stops) == 9 for stops in states[-1]["legends"].values())
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


def test_a_new_image_opens_at_the_checkpoints_threshold(ckpt, tmp_path):
    save_png(tmp_path / "a.png", scene())
    save_png(tmp_path / "b.png", scene(80, 100))
    with serving(ckpt, tmp_path) as server:
        default = server.session.model.threshold
        call(server, "/api/open", {"name": "a.png"})
        call(server, "/api/threshold", {"value": 0.8})
        assert json.loads(call(server, "/api/click", {"y": 70, "x": 100})[1])["threshold"] == 0.8
        state = json.loads(call(server, "/api/open", {"name": "b.png"})[1])
        assert state["threshold"] == default == state["model"]["threshold"] != 0.8
        assert state["model"]["checkpoint"] == "tiny.ckpt" and state["model"]["input_size"] > 0
        assert set(state["model"]["protocol"]) >= {"resize", "zoom_in", "flip", "precision"}


def test_finished_objects_are_saved_as_one_label_png(ckpt, tmp_path):
    save_png(tmp_path / "a.png", scene())
    with serving(ckpt, tmp_path) as server:
        session = server.session
        call(server, "/api/open", {"name": "a.png"})
        call(server, "/api/click", {"y": 75, "x": 100})
        first = session.mask().copy()
        state = json.loads(call(server, "/api/finish", {})[1])
        assert state["objects"] == 1 and state["clicks"] == [] and state["objects_overlay"].startswith("data:")
        call(server, "/api/click", {"y": 20, "x": 20, "positive": True})
        second = session.mask().copy()
        status, png = call(server, "/api/save_all")
        labels = np.asarray(Image.open(io.BytesIO(png)))
        want = np.where(second, 2, np.where(first, 1, 0))  # the later object over the earlier one
        assert status == 200 and labels.dtype == np.uint8 and np.array_equal(labels, want)
        call(server, "/api/undo", {})  # the second object's click, then its "finish": the first is current again
        state = json.loads(call(server, "/api/undo", {})[1])
        assert state["objects"] == 0 and len(state["clicks"]) == 1 and np.array_equal(session.mask(), first)
        call(server, "/api/finish", {})
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(call(server, "/api/save_all")[1]))), first * 1)
        assert json.loads(call(server, "/api/open", {"name": "a.png"})[1])["objects"] == 0  # a new image


def test_a_loaded_mask_is_the_previous_mask_of_the_next_click(ckpt, tmp_path):
    from ois_lightning.protocol.predictor import Predictor

    image = scene()
    save_png(tmp_path / "a.png", image)
    loaded = np.zeros((150, 200), bool)
    loaded[30:100, 40:160] = True
    buf = io.BytesIO()
    Image.fromarray(loaded.astype(np.uint8) * 255).save(buf, format="PNG")
    with serving(ckpt, tmp_path) as server:
        call(server, "/api/open", {"name": "a.png"})
        status, body = call(server, "/api/mask", raw=b"nope", headers={"Content-Type": "image/png"})
        assert status == 400 and body.count(b"\n") == 1
        small = io.BytesIO()
        Image.new("L", (20, 10)).save(small, format="PNG")
        status, body = call(server, "/api/mask", raw=small.getvalue(), headers={"Content-Type": "image/png"})
        assert status == 400 and b"10x20" in body and b"150x200" in body
        state = json.loads(call(server, "/api/mask", raw=buf.getvalue(), headers={"Content-Type": "image/png"})[1])
        assert state["clicks"] == [] and state["mask_pixels"] == loaded.sum() and state["overlay"]
        call(server, "/api/click", {"y": 60, "x": 100})
        p = Predictor.from_checkpoint(ckpt, device="cpu")
        p.set_image(image)
        assert np.array_equal(server.session.mask(), p.predict(np.array([[60, 100]]), np.array([1]), loaded)[0])
        call(server, "/api/undo", {})
        assert np.array_equal(server.session.mask(), loaded)


def test_every_served_static_file_is_package_data():
    """The page's scripts are served from ``static/`` and must ship in the wheel (pyproject package-data)."""
    import fnmatch
    import re
    import tomllib
    from importlib import resources

    from ois_lightning.app.server import STATIC

    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    files = {f"static/{name}" for name, _ in STATIC.values()}
    assert all(any(fnmatch.fnmatch(f, p) for p in patterns["ois_lightning.app"]) for f in files), files
    page = resources.files("ois_lightning.app").joinpath("static", "index.html").read_text()
    assert {"/" + src for src in re.findall(r'<script src="/([^"]+)"', page)} <= set(STATIC)
    assert all(resources.files("ois_lightning.app").joinpath(f).is_file() for f in files)


def test_a_model_reading_depth_files_is_refused_at_start_or_runs_its_depth_head(tmp_path):
    """The app has images only: a checkpoint trained on depth files (data.depth.source=gt) stops `ois app` in one
    line before serving (it failed on every image); with data.depth.source=model its depth head stands in."""
    gt = save_checkpoint(tmp_path / "gt.ckpt", "data.depth.source=gt")
    argv = ["app", "--ckpt", str(gt), "--port", "0"]
    with pytest.raises(ConfigError, match=r"^ckpt=.*gt.ckpt reads depth from data \(data.depth.source=gt\) and the "
                                          r"app has images only: add data.depth.source=model") as e:
        build_parser().parse_args(argv).func(build_parser().parse_args(argv))
    assert "\n" not in str(e.value)
    adapter = ModelAdapter.from_checkpoint(gt, "cpu", ["data.depth.source=model"])
    adapter.set_image(scene())
    mask, prob = adapter.predict(np.array([[75, 100]]), np.array([1]), None, adapter.threshold)
    assert mask.shape == prob.shape == (150, 200) and np.isfinite(prob).all()

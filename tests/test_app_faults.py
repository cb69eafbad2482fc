"""`ois app` under hostile or unlucky clients: a stalled or malformed request never holds the session for the
others, and an image of any size opens within bounded memory (downscaled, the saved mask back at full size)."""
from __future__ import annotations

import io
import json
import socket
import time

import numpy as np
from PIL import Image

from ois_lightning.app import server as app_server
from ois_lightning.app.session import MAX_PIXELS, decode_image

from .test_app import call, ckpt, scene, serving  # noqa: F401 - ckpt is the module's fixture


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def test_a_stalled_body_does_not_freeze_other_clients(ckpt, monkeypatch):  # noqa: F811
    monkeypatch.setattr(app_server.Handler, "timeout", 2.0)
    with serving(ckpt, None) as server:
        host, port = server.server_address[:2]
        stalled = socket.create_connection((host, port))
        stalled.sendall(b"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                        b"Content-Length: 100000\r\n\r\npartial")  # and then nothing
        time.sleep(0.3)
        start = time.monotonic()
        status, _ = call(server, "/api/state")
        assert status == 200 and time.monotonic() - start < 1.5  # not waiting for the stalled body
        stalled.settimeout(10)
        answer = b""
        while chunk := stalled.recv(4096):  # the server answers, then closes the connection
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408") and b"request timeout" in answer  # then dropped
        stalled.close()


def test_bad_content_lengths_are_one_line_400s(ckpt):  # noqa: F811
    with serving(ckpt, None) as server:
        host, port = server.server_address[:2]
        for length in (b"-1", b"abc"):
            with socket.create_connection((host, port), timeout=10) as s:
                s.sendall(b"POST /api/click HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          b"Content-Length: " + length + b"\r\n\r\n")
                answer = b""
                while chunk := s.recv(4096):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 400") and b"Content-Length" in answer, answer
        assert call(server, "/api/state")[0] == 200


def test_a_large_image_opens_downscaled_and_saves_at_full_size(ckpt):  # noqa: F811
    h, w = 1800, 3000  # 5.4 MP > MAX_PIXELS
    big = np.kron(scene(180, 300), np.ones((10, 10, 1), np.uint8))
    with serving(ckpt, None) as server:
        status, body = call(server, "/api/upload", raw=png(big), headers={"Content-Type": "image/png"})
        assert status == 200, body
        state = json.loads(body)
        sh, sw = state["size"]
        assert state["original_size"] == [h, w] and sh * sw <= MAX_PIXELS and abs(sw / sh - w / h) < 0.01
        assert call(server, "/api/click", {"y": sh // 2, "x": sw // 2, "positive": True})[0] == 200
        status, saved = call(server, "/api/save")
        mask = np.asarray(Image.open(io.BytesIO(saved)))
        assert status == 200 and mask.shape == (h, w)
    image, original = decode_image(png(big), max_pixels=10_000)
    assert original == (h, w) and image.shape[0] * image.shape[1] <= 10_000

"""``ois app``: a standard-library HTTP server with a small JSON API and one static page (docs/app.md).

GET  /, /app.js, /view.js  the page        GET  /api/state     clicks, overlays, maps, model information
GET  /api/images       names under --images  GET  /api/image     the open image (PNG)
GET  /api/save         the current mask as a PNG download
GET  /api/save_all     every object as one label PNG (0 background, k the k-th object)
POST /api/open {name}  POST /api/upload (image bytes)  POST /api/click {y, x, positive}
POST /api/undo         POST /api/reset                  POST /api/threshold {value}
POST /api/finish       (the next object)                POST /api/mask (mask image bytes: the previous mask)
"""
from __future__ import annotations

import json
import sys
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from ..config.schema import ConfigError
from .session import Forbidden, ModelAdapter, Session, decode_image, list_images
from .views import mask_png, png_bytes, state_json

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860
MAX_UPLOAD = 64 * 1024 * 1024  # bytes
BODY_TIMEOUT_S = 20.0
LOCAL_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}


STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript"),
          "/view.js": ("view.js", "text/javascript")}  # URL -> (file of static/, type): the only files served


def _static(url: str) -> bytes:
    return resources.files(__package__).joinpath("static", STATIC[url][0]).read_bytes()


class Handler(BaseHTTPRequestHandler):
    """The JSON API over one :class:`Session`; errors are one line of text with a 4xx status."""

    server: AppServer
    protocol_version = "HTTP/1.1"
    timeout = BODY_TIMEOUT_S  # socket timeout of every read: a stalled client is dropped, never waited for
    body = b""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, kind: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = {"Content-Type": kind, "Content-Length": str(len(body)), "Cache-Control": "no-store",
                   "X-Content-Type-Options": "nosniff", **(extra or {})}
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: Any) -> None:
        self._send(200, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._send(status, (message.splitlines() or [""])[0].encode() + b"\n", "text/plain; charset=utf-8")

    def _host_allowed(self) -> bool:
        """Refuse other Host headers (DNS rebinding) unless the server was bound to a non-local address."""
        host = urlsplit("//" + (self.headers.get("Host") or "")).hostname or ""
        return self.server.any_host or host in LOCAL_NAMES or host == self.server.server_address[0]

    def _read_body(self) -> bytes:
        """The request body, read before the session lock is taken (a slow client stalls only itself; the socket
        times out after :data:`BODY_TIMEOUT_S`); ValueError for a bad Content-Length or a body cut short."""
        raw = (self.headers.get("Content-Length") or "0").strip()
        if not raw.isdigit():
            raise ValueError(f"Content-Length {raw!r}: expected a non-negative integer")
        length = int(raw)
        if length > MAX_UPLOAD:
            raise ValueError(f"request larger than {MAX_UPLOAD} bytes")
        body = self.rfile.read(length)
        if len(body) != length:
            raise ValueError(f"the body ended after {len(body)} of {length} bytes")
        return body

    def _body(self, kind: str) -> bytes:
        if not (self.headers.get("Content-Type") or "").startswith(kind):
            raise ValueError(f"expected Content-Type {kind}")
        return self.body

    def _dispatch(self, routes: dict[str, Callable[[Session], None]]) -> None:
        if not self._host_allowed():
            return self._error(HTTPStatus.FORBIDDEN, "forbidden: unexpected Host header")
        route = routes.get(urlsplit(self.path).path)
        if route is None:
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        session = self.server.session
        try:
            self.body = self._read_body() if self.command == "POST" else b""
        except TimeoutError:
            self.close_connection = True
            return self._error(HTTPStatus.REQUEST_TIMEOUT, f"request timeout: no body within {BODY_TIMEOUT_S:g} s")
        except ValueError as e:
            self.close_connection = True
            return self._error(HTTPStatus.BAD_REQUEST, f"bad request: {e}")
        try:
            with session.lock:
                route(session)
        except Forbidden as e:
            self._error(HTTPStatus.FORBIDDEN, f"forbidden: {e}")
        except FileNotFoundError as e:
            self._error(HTTPStatus.NOT_FOUND, f"not found: {e}")
        except (ValueError, KeyError, TypeError) as e:
            self._error(HTTPStatus.BAD_REQUEST, f"bad request: {e}")
        except Exception as e:  # a failing model call must answer, not hang the page; the traceback goes to stderr
            traceback.print_exc()
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {e}")

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        static = {url: (lambda s, url=url: self._send(200, _static(url), STATIC[url][1])) for url in STATIC}
        self._dispatch({
            **static,
            "/api/state": lambda s: self._json(state_json(s)),
            "/api/images": lambda s: self._json({"images": list_images(s.images)}),
            "/api/image": lambda s: self._send(200, png_bytes(_need_image(s)), "image/png"),
            "/api/save": lambda s: self._download(s, mask_png(s.full_mask()), "mask"),
            "/api/save_all": lambda s: self._download(s, png_bytes(s.labels()), "objects"),
        })

    def do_POST(self) -> None:  # noqa: N802
        actions: dict[str, Callable[[Session, dict], Any]] = {
            "/api/open": lambda s, a: s.open_file(str(a["name"])),
            "/api/click": lambda s, a: s.click(int(a["y"]), int(a["x"]), bool(a.get("positive", True))),
            "/api/undo": lambda s, a: s.undo(),
            "/api/reset": lambda s, a: s.reset(),
            "/api/threshold": lambda s, a: s.set_threshold(float(a["value"])),
            "/api/finish": lambda s, a: s.finish_object(),
        }
        routes = {path: self._json_action(action) for path, action in actions.items()}
        routes["/api/upload"] = lambda s: (s.open_array(*decode_image(self._body("image/")), "upload"),
                                           self._json(state_json(s)))
        routes["/api/mask"] = lambda s: (s.load_mask(self._body("image/")), self._json(state_json(s)))
        self._dispatch(routes)

    def _json_action(self, action: Callable[[Session, dict], Any]) -> Callable[[Session], None]:
        """Run ``action`` with the request's JSON object (JSON only: a cross-site form cannot send it without
        CORS), then answer with the new state."""
        def route(session: Session) -> None:
            args = json.loads(self._body("application/json") or b"{}")
            if not isinstance(args, dict):
                raise ValueError("the body must be a JSON object")
            action(session, args)
            self._json(state_json(session))
        return route

    def _download(self, session: Session, png: bytes, suffix: str) -> None:
        stem = Path(session.name).stem or "image"
        self._send(200, png, "image/png", {"Content-Disposition": f'attachment; filename="{stem}_{suffix}.png"'})


def _need_image(session: Session) -> Any:
    if session.image is None:
        raise FileNotFoundError("no image is open")
    return session.image


class AppServer(ThreadingHTTPServer):
    """The HTTP server holding the session; ``any_host`` when bound beyond loopback (the user chose to)."""

    daemon_threads = True

    def __init__(self, session: Session, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 verbose: bool = False) -> None:
        super().__init__((host, port), Handler)
        self.session, self.verbose = session, verbose
        self.any_host = host not in LOCAL_NAMES

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def run_app(ckpt: str, images: str | None = None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
            device: str | None = None, overrides: Sequence[str] = ()) -> int:
    """Load the checkpoint (``overrides`` on its config), then serve until Ctrl-C."""
    root = Path(images) if images is not None else None
    if root is not None and not root.is_dir():
        raise ConfigError(f"--images {images}: not a folder")
    session = Session(ModelAdapter.from_checkpoint(ckpt, device, overrides), root)
    try:
        server = AppServer(session, host, port, verbose=True)
    except OSError as e:
        raise ConfigError(f"--host {host} --port {port}: {e.strerror or e}") from None
    if server.any_host:
        print(f"ois app: listening on {host}, reachable from other machines", file=sys.stderr)
    print(f"ois app: open {server.url}  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0

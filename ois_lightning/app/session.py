"""The app's state for one image: clicks, the history stack behind undo, the threshold, and the one adapter to
:class:`~ois_lightning.protocol.predictor.Predictor`. Opening files is confined to the ``--images`` folder."""
from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..config.schema import ConfigError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# The app works on at most MAX_PIXELS pixels (its memory grows ~90 bytes per pixel over a session of clicks);
# larger images are downscaled on opening and the saved mask is scaled back to the file's size. Files over
# MAX_FILE_PIXELS are refused before they are decoded.
MAX_PIXELS = 4_000_000
MAX_FILE_PIXELS = 100_000_000
MAX_OBJECTS = 255  # objects of one image: the saved label PNG is 8-bit


class Forbidden(PermissionError):
    """A request for a file outside the ``--images`` folder (or no folder was given)."""


class ModelAdapter:
    """The only place that calls the Predictor API (``from_checkpoint``, ``set_image``, ``predict``,
    ``order_map``, ``threshold``, ``input_size``, ``config``)."""

    def __init__(self, predictor: Any, name: str = "") -> None:
        self.predictor, self.name = predictor, name
        self.threshold = float(predictor.threshold)  # the checkpoint's: each new image starts from it

    @classmethod
    def from_checkpoint(cls, ckpt: str | Path, device: str | None = None, overrides: Sequence[str] = ()
                        ) -> ModelAdapter:
        """The checkpoint's Predictor (``overrides`` on its config). The app has images only: a model that reads
        depth from data (``data.depth.source`` file or gt) is refused in one line saying how to run it."""
        import warnings

        from ..protocol.predictor import Predictor

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the depth advice: raised below in the app's terms
            predictor = Predictor.from_checkpoint(ckpt, device=device, overrides=list(overrides))
        if predictor.depth_from_sample:
            source = predictor.config.data.depth.source.value
            how = ("add data.depth.source=model to let its depth head predict depth (not the depth it was trained "
                   "with)" if predictor.can_predict_depth else "it has no depth head or depth model to predict it; use the Predictor with "
                   "depth maps (docs/app.md)")
            raise ConfigError(f"ckpt={ckpt} reads depth from data (data.depth.source={source}) and the app has "
                              f"images only: {how}")
        return cls(predictor, Path(ckpt).name)

    def info(self) -> dict:
        """What the page shows about the model: checkpoint file, input side, protocol, default threshold."""
        from ..protocol.predictor import protocol

        config = getattr(self.predictor, "config", None)
        proto = {} if config is None else {**protocol(config), "precision": str(config.eval.precision)}
        return {"checkpoint": self.name, "input_size": int(self.predictor.input_size), "protocol": proto,
                "threshold": self.threshold}

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(image)  # depth None: the model's own depth head

    def predict(self, points: np.ndarray, labels: np.ndarray, prev_mask: np.ndarray | None,
                threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """(mask bool HxW, prob float32 HxW) of one click round at ``threshold``."""
        self.predictor.threshold = threshold
        return self.predictor.predict(points, labels, prev_mask)

    def order_map(self, points: np.ndarray, labels: np.ndarray) -> dict:
        return self.predictor.order_map(points, labels)


def threshold_mask(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Re-threshold a probability map as the predictor does (``prob > threshold``)."""
    return prob > threshold


@dataclass
class Step:
    """The state after one click: every click so far, its probabilities and the mask the app showed."""

    points: list[tuple[int, int]]  # (y, x) original pixels
    labels: list[int]  # 1 positive, 0 negative
    prob: np.ndarray
    mask: np.ndarray
    threshold: float
    latency_ms: float
    order: dict = field(default_factory=dict)  # Predictor.order_map of these clicks
    views: dict | None = None  # what the page shows, rendered once by app.views (None: to render)


def safe_image_path(root: Path | None, name: str) -> Path:
    """``root/name`` resolved (symlinks followed) if it is an image file inside ``root``, else :class:`Forbidden`
    (outside, absolute elsewhere, no ``--images``) or FileNotFoundError."""
    if root is None:
        raise Forbidden("no --images folder: open an image with the file picker")
    if "\x00" in name:
        raise Forbidden("bad file name")
    base = root.resolve()
    path = (base / name).resolve()
    if not path.is_relative_to(base):
        raise Forbidden(f"{name!r} is outside --images")
    if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
        raise FileNotFoundError(f"no image {name!r} in --images")
    return path


def list_images(root: Path | None) -> list[str]:
    """Image files under ``root`` (recursive, relative POSIX names, sorted); only those inside it after
    resolving symlinks."""
    if root is None:
        return []
    base = root.resolve()
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and p.resolve().is_relative_to(base))


def working_size(h: int, w: int, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(h, w) scaled down, aspect kept, to at most ``max_pixels`` pixels; unchanged when it fits."""
    if h * w <= max_pixels:
        return h, w
    f = (max_pixels / (h * w)) ** 0.5
    return max(1, int(h * f)), max(1, int(w * f))


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, tuple[int, int]]:
    """Image bytes -> (HxWx3 uint8 RGB at the app's working size, the file's (H, W)); ValueError when they are
    not an image or have more than :data:`MAX_FILE_PIXELS` pixels. An image over ``max_pixels`` is downscaled
    (a JPEG already while decoding), so the session's memory is bounded whatever the file."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if h * w > MAX_FILE_PIXELS:
                raise ValueError(f"{w}x{h} image: more than {MAX_FILE_PIXELS // 10**6} MP; downscale it first")
            th, tw = working_size(h, w, max_pixels)
            im.draft("RGB", (tw, th))  # JPEG: decode at a reduced scale, never below the target
            rgb = im.convert("RGB")
            if rgb.size != (tw, th):
                rgb = rgb.resize((tw, th), Image.Resampling.BOX)
            return np.asarray(rgb), (h, w)
    except (OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"not a readable image: {e}") from None


class Session:
    """One user's interactive session (the app is single-user; a lock serialises requests)."""

    def __init__(self, model: ModelAdapter, images: Path | None = None) -> None:
        self.model = model
        self.images = images
        self.lock = threading.Lock()
        self.name = ""
        self.image: np.ndarray | None = None
        self.original: tuple[int, int] | None = None  # (H, W) of the file; the image may be downscaled
        self.history: list[Step] = []
        self.objects: list[np.ndarray] = []  # the finished objects' masks, in order (object k is label k + 1)
        self.finished: list[list[Step]] = []  # each finished object's steps: undo after "finish" reopens it
        self.objects_view: str | None = None  # their overlay as the page shows it (None: to render, app.views)
        self.threshold = model.threshold

    def open_file(self, name: str) -> None:
        """Open ``name`` of the ``--images`` folder (see :func:`safe_image_path`)."""
        path = safe_image_path(self.images, name)
        self.open_array(*decode_image(path.read_bytes()), name)

    def open_array(self, image: np.ndarray, original: tuple[int, int] | None, name: str) -> None:
        """Encode a new image and forget the clicks; ``original``: the file's (H, W) when ``image`` is a
        downscaled copy (:func:`decode_image`)."""
        self.model.set_image(image)
        self.image, self.name, self.history, self.objects, self.objects_view = image, name, [], [], None
        self.finished = []
        self.original = tuple(original) if original is not None else image.shape[:2]
        self.threshold = self.model.threshold

    @property
    def current(self) -> Step | None:
        return self.history[-1] if self.history else None

    def click(self, y: int, x: int, positive: bool) -> Step:
        """One more click: the previous mask is the one shown after the last click (at its threshold)."""
        if self.image is None:
            raise ValueError("open an image first")
        h, w = self.image.shape[:2]
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(f"click ({y}, {x}) is outside the {h}x{w} image")
        last = self.current
        points = [*(last.points if last else []), (int(y), int(x))]
        labels = [*(last.labels if last else []), int(positive)]
        pts, lab = np.array(points, dtype=np.int64), np.array(labels, dtype=np.int64)
        start = time.perf_counter()
        mask, prob = self.model.predict(pts, lab, last.mask if last else None, self.threshold)
        latency = (time.perf_counter() - start) * 1000
        step = Step(points, labels, prob, np.asarray(mask, dtype=bool), self.threshold, latency,
                    self.model.order_map(pts, lab))
        self.history.append(step)
        return step

    def undo(self) -> None:
        """Back to the state before the last click, exactly as it was shown (nothing is recomputed); before the
        first click of an object, back to before the last "finish object": that object is current again, with its
        clicks and its mask."""
        if self.history:
            self.history.pop()
        elif self.objects:
            self.objects.pop()
            self.history, self.objects_view = self.finished.pop(), None
        if self.current is not None:
            self.threshold = self.current.threshold

    def reset(self) -> None:
        self.history = []

    def finish_object(self) -> None:
        """Keep the current mask as a finished object and start the next one (no clicks, no previous mask), as
        isegm's demo controller ``finish_object``; nothing to keep before the first click."""
        if self.current is not None and self.current.mask.any():
            if len(self.objects) >= MAX_OBJECTS:
                raise ValueError(f"at most {MAX_OBJECTS} objects fit an 8-bit label image")
            self.objects.append(self.current.mask.copy())
            self.finished.append(self.history)
            self.objects_view = None
        self.history = []

    def load_mask(self, data: bytes) -> None:
        """A mask file (non-zero = object) as the previous mask of the next click, as isegm's demo "Load mask":
        a step without clicks that undo removes. It is scaled (nearest) to the working size when it has the
        file's size; ValueError for another size or unreadable bytes."""
        if self.image is None:
            raise ValueError("open an image first")
        try:
            with Image.open(io.BytesIO(data)) as im:
                grey = im.convert("L")
        except (OSError, Image.DecompressionBombError) as e:
            raise ValueError(f"mask: not a readable image: {e}") from None
        h, w = self.image.shape[:2]
        if (grey.height, grey.width) not in ((h, w), tuple(self.original or (h, w))):
            raise ValueError(f"mask is {grey.height}x{grey.width}: expected the image's "
                             f"{self.original[0]}x{self.original[1]}")
        mask = np.asarray(grey.resize((w, h), Image.Resampling.NEAREST)) > 0
        self.history = [Step([], [], mask.astype(np.float32), mask, self.threshold, 0.0)]

    def set_threshold(self, value: float) -> None:
        """Re-threshold the last probabilities (no model call)."""
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"threshold {value} is not in [0, 1]")
        self.threshold = value
        if self.current is not None:
            self.current.mask = threshold_mask(self.current.prob, value)
            self.current.threshold, self.current.views = value, None

    def full_mask(self) -> np.ndarray:
        """:meth:`mask` at the file's size (nearest neighbour when the image was downscaled): what Save gives."""
        return self._full_size(self.mask())

    def labels(self) -> np.ndarray:
        """uint8 label image at the file's size: 0 background, k + 1 object k (the finished ones, then the
        current one if it has a mask); a later object covers an earlier one where they overlap."""
        out = np.zeros(self.mask().shape, np.uint8)
        masks = [*self.objects, *([self.current.mask] if self.current is not None else [])]
        for k, mask in enumerate(masks[:MAX_OBJECTS]):
            out[mask] = k + 1
        return self._full_size(out)

    def _full_size(self, array: np.ndarray) -> np.ndarray:
        if self.original is None or array.shape == tuple(self.original):
            return array
        h, w = self.original
        return np.asarray(Image.fromarray(array).resize((w, h), Image.Resampling.NEAREST))

    def mask(self) -> np.ndarray:
        """The mask shown now (all background before the first click)."""
        if self.image is None:
            raise ValueError("open an image first")
        return self.current.mask if self.current else np.zeros(self.image.shape[:2], bool)

"""On-disk cache of frozen-encoder outputs, shared by the rows of an evaluation grid (``eval.feature_cache``).

The encoder and depth head are frozen in every ablation row (paper Sec. 4.1), so the rows of a table evaluate
the same :class:`~ois_lightning.model.ImageEncoding` on each image; only the per-click parts differ. An entry is
keyed by

* the encoder identity: a hash of every weight of the model outside the per-click parts (:data:`PER_CLICK`),
  i.e. the ViT, the depth head and anything else :meth:`OISModel.encode` may use;
* the input exactly as the encoder sees it (the transformed, padded image tensor, hence also the transform and
  the input size) and the depth input (tensor and kind) when one is given. So ``eval.resize`` and the flip
  batch (image and mirror) get entries of their own; zoom-in crops never come here
  (``ois_lightning/protocol/predictor.py``);
* the autocast in force (``eval.precision``, or Lightning's during validation): a bf16 encoding never serves a
  32-bit run, nor the reverse.

Entries are written atomically (temp file + ``os.replace``), so concurrent runs may share a folder: the worst
case is two processes computing the same entry. The folder is kept under ``max_gb`` by deleting the least
recently used entries (a hit refreshes an entry's mtime).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ..utils.atomic import atomic_write
from ..config.schema import ConfigError
from ..model import ImageEncoding, OISModel

PER_CLICK = ("dense", "sparse", "fusion", "dense_fusion", "seg_head")  # OISModel parts run per click round
CACHE_VERSION = 2  # 2: the key holds the autocast state
SUFFIX = ".pt"


def _update(h: "hashlib._Hash", t: Tensor) -> None:
    """Feed dtype, shape and the raw bytes of ``t`` into the hash ``h``."""
    t = t.detach().to("cpu").contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy())  # buffer protocol: no copy


def autocast_state(device_type: str) -> str:
    """The autocast in force for ``device_type``: its dtype (``torch.bfloat16`` ...) or ``off``."""
    if not torch.is_autocast_enabled(device_type):
        return "off"
    return str(torch.get_autocast_dtype(device_type))


def encoder_identity(model: nn.Module) -> str:
    """sha256 of the names, shapes and values of every parameter and buffer outside :data:`PER_CLICK`."""
    h = hashlib.sha256(f"{type(model).__name__}/v{CACHE_VERSION}".encode())
    for name, t in sorted(model.state_dict().items()):
        if name.split(".", 1)[0] not in PER_CLICK:
            h.update(name.encode())
            _update(h, t)
    return h.hexdigest()


def _fields(enc: ImageEncoding) -> dict:
    """The constructor fields of an encoding (what is stored on disk)."""
    return {f.name: getattr(enc, f.name) for f in dataclasses.fields(enc) if f.init}


class FeatureCache:
    """Get-or-compute :meth:`OISModel.encode` through a folder of ``<key>.pt`` files.

    Args:
        folder: cache directory (created). max_gb: size bound of the folder in GB (least recently used
        entries are deleted beyond it). model: the model whose encoder is cached; its identity is hashed once
        here, so build one cache per set of weights.
    """

    def __init__(self, folder: str | Path, max_gb: float, model: OISModel) -> None:
        if max_gb <= 0:
            raise ConfigError(f"eval.cache_max_gb must be > 0, got {max_gb}")
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"eval.feature_cache={folder}: cannot create the cache folder ({e})") from None
        self.max_bytes = int(max_gb * 1e9)
        self.model = model
        self.identity = encoder_identity(model)
        self.hits = self.misses = 0

    def key(self, image: Tensor, depth: Tensor | None, depth_kind: str) -> str:
        """Entry name for one encoder input under the autocast in force (:func:`autocast_state`)."""
        h = hashlib.sha256(self.identity.encode())
        h.update(autocast_state(image.device.type).encode())
        _update(h, image)
        if depth is not None:
            h.update(depth_kind.encode())
            _update(h, depth)
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.folder / f"{key}{SUFFIX}"

    def encode(self, image: Tensor, depth: Tensor | None = None, depth_kind: str = "disparity") -> ImageEncoding:
        """``model.encode(image, depth, depth_kind)``, from the cache when possible (identical tensors).

        An entry stored by a model that uses depth also serves a model that does not (the depth is dropped,
        exactly what ``encode`` returns then); the reverse is a miss that overwrites the entry with depth.
        """
        key = self.key(image, depth, depth_kind)
        enc = self._load(key, image.device)
        if enc is not None and (enc.depth is not None or not self.model.uses_depth):
            self.hits += 1
            return enc if self.model.uses_depth else dataclasses.replace(enc, depth=None)
        self.misses += 1
        enc = self.model.encode(image, depth, depth_kind)
        self._store(key, enc)
        return enc

    def _load(self, key: str, device: torch.device) -> ImageEncoding | None:
        path = self.path(key)
        try:
            data = torch.load(path, map_location=device, weights_only=True)
            os.utime(path)  # least recently used goes first
        except FileNotFoundError:  # absent, or evicted by another run meanwhile
            return None
        except Exception as e:  # noqa: BLE001 - an unreadable entry is a miss, rewritten below
            warnings.warn(f"feature cache: ignoring unreadable entry {path} ({type(e).__name__}: {e})")
            return None
        data["feats"] = list(data["feats"])
        data["size"] = tuple(data["size"])
        return ImageEncoding(**data)

    def _store(self, key: str, enc: ImageEncoding) -> None:
        data = {k: (v.detach().cpu() if isinstance(v, Tensor) else v) for k, v in _fields(enc).items()}
        data["feats"] = [f.detach().cpu() for f in enc.feats]
        atomic_write(self.path(key), lambda f: torch.save(data, f), mode="wb")
        self.evict()

    def evict(self) -> None:
        """Delete the least recently used entries until the folder fits in ``max_gb``."""
        entries = []
        for path in self.folder.glob(f"*{SUFFIX}"):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size

"""isegm's COCO+LVIS training set (RITM / SimpleClick; the paper's Table 12), in the layout its preprocessing
publishes and ``CocoLvisDataset`` reads (SamsungLabs/ritm_interactive_segmentation,
``isegm/data/datasets/coco_lvis.py`` and ``isegm/data/sample.py``). Under ``root/<split>/``:

- ``hannotation.pickle``: ``{image_id: {"hierarchy": {inst_id: None | {"parent", "children", "node_level"}},
  "num_instance_masks": n}}``; the hierarchy's ids are the objects, ids ``n .. len(mapping) - 1`` are stuff;
- ``images/<image_id>.jpg``;
- ``masks/<image_id>.pickle``: ``(encoded_layers, objs_mapping)``, PNG-encoded uint8 / uint16 layers (stacked as
  channels) and per instance id ``(layer, mask_id)``: the instance is ``layers[:, :, layer] == mask_id``.

Every mask is one instance's own pixels, ``layers[:, :, layer] == mask_id``, as isegm's ``DSample.get_object_mask``:
a root's target never includes its children (isegm's conversion lets part of a child lie outside its parent).
``ds[i]`` holds the roots of the hierarchy (parent None); the training read :meth:`CocoLvis.draw` holds every
instance with ``Sample.parents``, so the training wrapper can promote a child whose root the augmentation removed,
as isegm's ``DSample.remove_small_objects`` does. Stuff is background unless :meth:`CocoLvis.draw` draws it
(probability ``stuff_prob``), and then each stuff region is a root object too. An allow-list (JSON list of image
ids) restricts the images.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from .base import DataError, MissingFile, Sample, SegDataset, UnreadableFile, check_same_size, read_image

ObjsMapping = Sequence[tuple[int, int]]  # instance id -> (layer index, mask id)


def read_pickle(path: Path) -> Any:
    """The object pickled in ``path``; MissingFile / UnreadableFile naming it when it is absent or unreadable."""
    if not path.is_file():
        raise MissingFile(f"{path}: file not found (expected a pickle of isegm's COCO+LVIS layout)")
    try:
        with path.open("rb") as f:
            return pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError) as e:
        raise UnreadableFile(f"{path}: cannot read pickle (expected isegm's COCO+LVIS layout): {e}") from e


def decode_layers(path: Path, encoded: Any) -> np.ndarray:
    """PNG-encoded layers -> H,W,L uint8 / uint16."""
    if not isinstance(encoded, (list, tuple)) or not encoded:
        raise DataError(f"{path}: expected a non-empty list of PNG-encoded layers as the pickle's first item")
    try:
        layers = [cv2.imdecode(np.frombuffer(x, np.uint8), cv2.IMREAD_UNCHANGED) for x in encoded]
    except (TypeError, ValueError) as e:
        raise UnreadableFile(f"{path}: a mask layer is not PNG bytes ({e})") from e
    if any(layer is None or layer.ndim != 2 for layer in layers) or len({x.shape for x in layers}) != 1:
        raise UnreadableFile(f"{path}: expected single-channel PNG layers of one size")
    return np.stack(layers, axis=2)  # H,W,L


def root_of(hierarchy: Mapping[int, Any], inst_id: int, where: Path) -> int:
    """The root (the ancestor without a parent) of object ``inst_id``."""
    seen = {inst_id}
    node = hierarchy[inst_id]
    while node is not None and node.get("parent") is not None:
        inst_id = node["parent"]
        if inst_id in seen or inst_id not in hierarchy:
            raise DataError(f"{where}: hierarchy parent {inst_id} is a cycle or unknown (expected a tree of ids)")
        seen.add(inst_id)
        node = hierarchy[inst_id]
    return inst_id


class CocoLvis(SegDataset):
    """isegm COCO+LVIS; ids ``cocolvis/<image_id>``. ``ds[i]``: the roots, no stuff; training reads :meth:`draw`."""

    name = "cocolvis"

    def __init__(self, root: str | Path, split: str = "train", stuff_prob: float = 0.0,
                 allow_list: str | Path | None = None):
        """``allow_list``: a JSON list of image ids, relative to ``root/<split>/`` (as isegm) or absolute."""
        self.folder = Path(root) / split
        self.stuff_prob = stuff_prob
        self.annotation = self.folder / "hannotation.pickle"
        samples = read_pickle(self.annotation)
        if not isinstance(samples, dict):
            raise DataError(f"{self.annotation}: expected a dict image_id -> {{'hierarchy', 'num_instance_masks'}}")
        if allow_list is not None:
            allowed = self._allow_list(self.folder / allow_list)
            samples = {k: v for k, v in samples.items() if k in allowed}
        self.samples = sorted(samples.items())

    @classmethod
    def from_root(cls, root: str, split: str, **kw: Any) -> SegDataset:
        return cls(root, split, **kw)

    @staticmethod
    def _allow_list(path: Path) -> set:
        try:
            ids = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read allow-list (expected a JSON list of image ids): {e}") from e
        if not isinstance(ids, list):
            raise DataError(f"{path}: expected a JSON list of image ids")
        return set(ids)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self._read(i, with_stuff=False, hierarchy=False)

    def draw(self, i: int, rng: np.random.Generator) -> Sample:
        """Training read: every instance with its parent; stuff regions are root objects too with probability
        ``stuff_prob``, drawn from ``rng``."""
        return self._read(i, with_stuff=self.stuff_prob > 0 and rng.random() < self.stuff_prob, hierarchy=True)

    def _read(self, i: int, with_stuff: bool, hierarchy: bool) -> Sample:
        image_id, info = self.samples[i]
        image_path = self.folder / "images" / f"{image_id}.jpg"
        masks_path = self.folder / "masks" / f"{image_id}.pickle"
        image = read_image(image_path)
        packed = read_pickle(masks_path)
        if not isinstance(packed, (list, tuple)) or len(packed) != 2:
            raise DataError(f"{masks_path}: expected a pair (encoded_layers, objs_mapping)")
        layers = decode_layers(masks_path, packed[0])  # H,W,L
        check_same_size(image, image_path, layers, masks_path)
        mapping = packed[1]
        try:
            ids, parents = self._objects(info, mapping, with_stuff, hierarchy, self.annotation)
            masks = np.zeros((len(ids), *image.shape[:2]), np.int8)  # K,H,W
            for mask, inst_id in zip(masks, ids):
                layer, mask_id = mapping[inst_id]
                mask[layers[:, :, layer] == mask_id] = 1
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
            raise DataError(f"{masks_path}: instance ids of {self.annotation} do not match objs_mapping (expected "
                            f"a (layer, mask_id) pair for each id of image {image_id}): {e!r}") from e
        return Sample(image=image, masks=masks, depth=None, id=f"{self.name}/{image_id}",
                      parents=parents if hierarchy else None)

    @staticmethod
    def _objects(info: Mapping[str, Any], mapping: ObjsMapping, with_stuff: bool, hierarchy: bool,
                 where: Path) -> tuple[list[int], np.ndarray]:
        """The instance ids of the Sample's masks (every object of the hierarchy, or only its roots; then each
        stuff id when ``with_stuff``) and per mask the index of its parent's mask, -1 for a root (K,) int."""
        tree = info["hierarchy"]
        roots = {k for k in tree if root_of(tree, k, where) == k}  # also checks every parent chain
        ids = sorted(tree if hierarchy else roots)
        parents = [-1 if k in roots else ids.index(tree[k]["parent"]) for k in ids]
        if with_stuff:
            stuff = range(int(info["num_instance_masks"]), len(mapping))
            ids, parents = ids + list(stuff), parents + [-1] * len(stuff)
        return ids, np.array(parents, np.int64)

"""``ois export``: the OIS network as two ONNX graphs, split as in paper Fig. 2.

* ``encoder.onnx``: ``image`` (1,3,S,S) RGB in [0,1] (and, when depth comes from files or ground truth, the
  ``raw_depth`` (1,1,S,S)) -> ``feat0..feat3`` (1,D,S/p,S/p) and, when the model reads depth, ``depth``
  (1,1,S,S) normalised to [0,1] (1 = nearest). Frozen ViT, depth head (or separate depth model) and depth
  encoder: run once per image.
* ``click.onnx``: ``coords`` (1,K,2) float (y, x) input pixels, ``labels`` (1,K) int64 (1 pos / 0 neg / -1 none),
  ``prev_mask`` (1,1,S,S) in {0,1} (all zeros in round 1), ``orig_im_size`` int64 [H, W] and the encoder's
  outputs -> ``logits`` (1,1,S,S) and ``prob`` (1,1,H,W), the probabilities of the original image as the
  Predictor computes them (``eval.resize``'s mapping back, as SAM's ONNX decoder takes ``orig_im_size``).

The number of clicks K and the original size (H, W) are dynamic; the image side S is fixed at
``model.input_size`` because the ViT's position-embedding interpolation is traced with constant sizes (a graph
exported with a dynamic side runs at other sizes but is wrong there). ``export.json`` beside the graphs lists the
inputs, outputs and settings, and under ``preprocess`` (:mod:`~ois_lightning.tools.export_manifest`) how to feed
them: resize rule, normalisation, click and previous-mask mapping, threshold.
Exporter: ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based one; needs ``onnxscript``).
"""
from __future__ import annotations

import importlib.util
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..checkpoint import load_checkpoint
from ..config.schema import THRESHOLD, ConfigError
from ..model.inputs import uses_depth
from ..model import ImageEncoding, OISModel
from ..protocol.geometry import Letterbox, Mapping, Stretch, letterbox_content
from ..protocol.predictor import protocol
from ..utils.atomic import atomic_write
from .export_manifest import preprocess

ENCODER_FILE, CLICK_FILE, MANIFEST_FILE = "encoder.onnx", "click.onnx", "export.json"
FEATURES = ("feat0", "feat1", "feat2", "feat3")
CLICK_INPUTS = ("coords", "labels", "prev_mask", "orig_im_size")


class EncoderGraph(nn.Module):
    """``OISModel.encode`` with tensor outputs: image [, raw depth] -> feat0..feat3 [, normalised depth]."""

    def __init__(self, model: OISModel, depth_kind: str) -> None:
        super().__init__()
        self.model, self.depth_kind = model, depth_kind

    def forward(self, image: Tensor, depth: Tensor | None = None) -> tuple[Tensor, ...]:
        enc = self.model.encode(image, depth, self.depth_kind)
        return (*enc.feats, enc.depth) if enc.depth is not None else tuple(enc.feats)


def original_frame(resize: str, orig_im_size: Tensor, size: int) -> Mapping:
    """The mapping of ``eval.resize`` for an image of (H, W) = ``orig_im_size`` (2,) int64, a graph input: its
    values become symbolic sizes in the exported graph."""
    h, w = orig_im_size[0].item(), orig_im_size[1].item()
    torch._check(h >= 1)
    torch._check(w >= 1)
    if resize == "stretch":
        return Stretch((h, w), size)
    content = letterbox_content(orig_im_size, size)
    rh, rw = content[0].item(), content[1].item()
    for side in (rh, rw):
        torch._check(side >= 1)
        torch._check(side <= size)
    return Letterbox((h, w), (rh, rw), size)


class ClickGraph(nn.Module):
    """``OISModel.forward`` on the encoder's outputs: one click round -> logits (1,1,S,S) and the probabilities
    (1,1,H,W) of the original image (:func:`original_frame` of ``resize``)."""

    def __init__(self, model: OISModel, size: int, resize: str) -> None:
        super().__init__()
        self.model, self.size, self.resize = model, size, resize

    def forward(self, coords: Tensor, labels: Tensor, prev_mask: Tensor, orig_im_size: Tensor, feat0: Tensor,
                feat1: Tensor, feat2: Tensor, feat3: Tensor, depth: Tensor | None = None) -> tuple[Tensor, Tensor]:
        enc = ImageEncoding([feat0, feat1, feat2, feat3], depth, (self.size, self.size))
        logits = self.model(enc, coords, labels, prev_mask)  # 1,1,S,S
        return logits, original_frame(self.resize, orig_im_size, self.size).to_original(logits)  # 1,1,H,W


def graph_names(model: OISModel, depth_input: bool) -> dict[str, list[str]]:
    """Input and output names of both graphs."""
    depth = ["depth"] if model.uses_depth else []
    return {"encoder_inputs": ["image", *(["raw_depth"] if depth_input else [])],
            "encoder_outputs": [*FEATURES, *depth],
            "click_inputs": [*CLICK_INPUTS, *FEATURES, *depth], "click_outputs": ["logits", "prob"]}


def example_inputs(size: int, clicks: int, depth_input: bool, seed: int = 0) -> dict[str, Tensor]:
    """Random inputs of both graphs: image (1,3,S,S) [, raw_depth (1,1,S,S)], coords (1,K,2), labels (1,K) with
    the first click positive, prev_mask (1,1,S,S) a square in the middle, orig_im_size a landscape (H, W)."""
    g = torch.Generator().manual_seed(seed)
    prev = torch.zeros(1, 1, size, size)
    prev[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    labels = torch.randint(0, 2, (1, clicks), generator=g)
    labels[0, 0] = 1
    out = {"image": torch.rand(1, 3, size, size, generator=g),
           "coords": torch.rand(1, clicks, 2, generator=g) * (size - 1), "labels": labels, "prev_mask": prev,
           "orig_im_size": torch.tensor([size - size // 5 - seed, size + size // 3 + seed])}
    if depth_input:
        out["raw_depth"] = torch.rand(1, 1, size, size, generator=g) + 0.1
    return out


def _save(program: Any, path: Path) -> None:
    """An ``ONNXProgram`` to ``path`` (weights beyond protobuf's 2 GB go to ``<name>.data`` beside it): written in
    a temporary folder beside ``path``, then moved into place file by file."""
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export.") as tmp:
        program.save(Path(tmp) / path.name)
        for f in Path(tmp).iterdir():
            os.replace(f, path.parent / f.name)


def export_onnx(model: OISModel, out_dir: str | Path, input_size: int, depth_input: bool = False,
                depth_kind: str = "disparity", threshold: float = THRESHOLD, resize: str = "letterbox") -> dict:
    """Write ``encoder.onnx``, ``click.onnx`` and ``export.json`` (the manifest, also returned) to ``out_dir``.

    ``depth_input``: the encoder takes the raw depth map (``data.depth.source`` file or gt) of kind
    ``depth_kind``; otherwise the model's depth head or depth model predicts it inside the graph. ``resize``:
    ``eval.resize``, the geometry of ``prob`` and of the ``preprocess`` section.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    names = graph_names(model, depth_input)
    x = example_inputs(input_size, 3, depth_input)
    encoder = EncoderGraph(model, depth_kind).eval()
    enc_args = tuple(x[n] for n in names["encoder_inputs"])
    kwargs = dict(dynamo=True, verbose=False)
    _save(torch.onnx.export(encoder, enc_args, None, input_names=names["encoder_inputs"],
                            output_names=names["encoder_outputs"], **kwargs), out / ENCODER_FILE)
    with torch.no_grad():
        encoded = encoder(*enc_args)
    clicks = torch.export.Dim("clicks", min=1)
    click_args = (*(x[n] for n in CLICK_INPUTS), *encoded)
    dynamic = ({1: clicks}, {1: clicks}) + (None,) * (len(click_args) - 2)  # orig_im_size: its values are sizes
    with warnings.catch_warnings():  # coords and labels share the axis "clicks"; the exporter says so
        warnings.filterwarnings("ignore", message="# The axis name: clicks will not be used")
        program = torch.onnx.export(ClickGraph(model, input_size, resize).eval(), click_args, None,
                                    input_names=names["click_inputs"], output_names=names["click_outputs"],
                                    dynamic_shapes=dynamic, **kwargs)
    _save(program, out / CLICK_FILE)
    manifest = {"encoder": ENCODER_FILE, "click": CLICK_FILE, **names, "input_size": input_size,
                "patch_size": model.spec.patch_size, "depth_kind": depth_kind if depth_input else None,
                "threshold": threshold, "dynamic": {"coords": {"1": "clicks"}, "labels": {"1": "clicks"},
                                                    "prob": {"2": "H", "3": "W"}},
                "preprocess": preprocess(resize, input_size, threshold, model.mean.flatten().tolist(),
                                         model.std.flatten().tolist(), depth_input),
                "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}"}
    atomic_write(out / MANIFEST_FILE, lambda f: json.dump(manifest, f, indent=1))
    return manifest


def relative_error(ref: Tensor, got: np.ndarray) -> float:
    """max |ref - got| / max |ref|."""
    ref_np = ref.detach().cpu().numpy()
    return float(np.abs(ref_np - got).max() / max(np.abs(ref_np).max(), 1e-12))


def check_export(model: OISModel, out_dir: str | Path, clicks: Sequence[int] = (1, 5), seed: int = 0
                 ) -> dict[str, float]:
    """Run the exported graphs under onnxruntime (CPU) on random inputs and compare with PyTorch: the largest
    :func:`relative_error` of the encoder outputs, of the logits and of the original-size ``prob`` over the click
    counts ``clicks``."""
    import onnxruntime as ort

    out = Path(out_dir)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    providers = ["CPUExecutionProvider"]
    encoder = ort.InferenceSession(str(out / manifest["encoder"]), providers=providers)
    click = ort.InferenceSession(str(out / manifest["click"]), providers=providers)
    depth_input = "raw_depth" in manifest["encoder_inputs"]
    size, errors = manifest["input_size"], {"encoder": 0.0, "click": 0.0, "prob": 0.0}
    model = model.eval().cpu()
    graph = ClickGraph(model, size, manifest["preprocess"]["resize"]).eval()
    for k in clicks:
        x = example_inputs(size, k, depth_input, seed + k)
        with torch.no_grad():
            enc = model.encode(x["image"], x.get("raw_depth"), manifest["depth_kind"] or "disparity")
            expected = [*enc.feats, *([enc.depth] if enc.depth is not None else [])]
            ref = graph(*(x[n] for n in CLICK_INPUTS), *expected)  # logits 1,1,S,S; prob 1,1,H,W
        outputs = encoder.run(None, {n: x[n].numpy() for n in manifest["encoder_inputs"]})
        errors["encoder"] = max(errors["encoder"], *(relative_error(e, o) for e, o in zip(expected, outputs)))
        feed = {n: x[n].numpy() for n in CLICK_INPUTS} | dict(zip(manifest["encoder_outputs"], outputs))
        for name, want, got in zip(("click", "prob"), ref, click.run(None, feed)):
            errors[name] = max(errors[name], relative_error(want, got))
    return errors


def run_export(ckpt: str, out_dir: str, config: str | None = None, overrides: Sequence[str] = (),
               check: bool = True) -> dict:
    """``ois export``: the checkpoint's model -> ONNX graphs in ``out_dir`` (:func:`export_onnx`), then
    :func:`check_export` against PyTorch (printed and stored in the manifest as ``max_relative_error``)."""
    missing = [m for m in ("onnx", "onnxscript", *(["onnxruntime"] if check else []))
               if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"ois export needs {', '.join(missing)}: pip install -e '.[export]'")
    model, cfg = load_checkpoint(ckpt, config, overrides)
    depth_input = uses_depth(cfg.model) and cfg.data.depth.source in ("file", "gt")
    p = protocol(cfg)
    manifest = export_onnx(model, out_dir, cfg.model.input_size, depth_input, cfg.data.depth.kind,
                           cfg.clicks.threshold, p["resize"])
    absent = [f"eval.{k}" for k in ("zoom_in", "flip") if p[k]] + (["eval.precision"] if cfg.eval.precision !=
                                                                     "32-true" else [])
    manifest["protocol"] = p | {"precision": str(cfg.eval.precision), "not_in_graphs": absent}
    if absent:
        print(f"ois export: {', '.join(absent)} of this checkpoint's protocol are not in the graphs (float32, no "
              "zoom-in, no flip): an onnxruntime loop of export.json gives other masks than ois eval")
    if check:
        manifest["max_relative_error"] = check_export(model, out_dir)
        print("onnxruntime vs PyTorch, max relative error: "
              + ", ".join(f"{k} {v:.2e}" for k, v in manifest["max_relative_error"].items()))
    atomic_write(Path(out_dir) / MANIFEST_FILE, lambda f: json.dump(manifest, f, indent=1))
    print(f"wrote {Path(out_dir) / ENCODER_FILE}, {Path(out_dir) / CLICK_FILE} and {Path(out_dir) / MANIFEST_FILE}")
    return manifest

"""`ois depth-cache` with a separate depth model (Table 6): a tiny random ZoeDepth from a local directory writes
metric depth that the order maps read inverted, preprocessed as the official pipeline does by default; an
interrupted run resumes without recomputing."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ois_lightning.cli import main
from ois_lightning.config.schema import ConfigError
from ois_lightning.config.load import load_config
from ois_lightning.data import DataError, DepthFolder, build_dataset
from ois_lightning.model.depth_models import DepthAnythingDepth, ZoeDepthDepth, build_depth_model
from ois_lightning.model.order import normalize_depth

from .helpers import REPO, TINY, tiny_zoedepth


N_IMAGES = 5


@pytest.fixture(scope="module")
def zoe_dir(tmp_path_factory):
    """A tiny random ZoeDepth saved as an HF directory, with an image-processor config (Intel's settings, a
    smaller target size)."""
    from transformers import ZoeDepthImageProcessor

    folder = tmp_path_factory.mktemp("zoedepth")
    tiny_zoedepth().save_pretrained(folder)
    ZoeDepthImageProcessor(ensure_multiple_of=32, size={"height": 64, "width": 96}).save_pretrained(folder)
    return folder


def _hf_pipeline(zoe_dir, image: np.ndarray) -> np.ndarray:
    """ZoeDepth the transformers way: processor, model + flipped model, post-processing back to the image."""
    from transformers import ZoeDepthForDepthEstimation, ZoeDepthImageProcessor

    model = ZoeDepthForDepthEstimation.from_pretrained(str(zoe_dir), local_files_only=True).eval()
    processor = ZoeDepthImageProcessor.from_pretrained(str(zoe_dir), local_files_only=True)
    x = processor(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out, flipped = model(pixel_values=x), model(pixel_values=torch.flip(x, dims=[-1]))
    maps = processor.post_process_depth_estimation(out, source_sizes=[image.shape[:2]], outputs_flipped=flipped)
    return maps[0]["predicted_depth"].numpy()


def _overrides(zoe_dir, depth_folder) -> list[str]:
    return TINY + [
        "data.test=[layered]", f"data.layered.test_length={N_IMAGES}", "data.layered.size=64",
        "data.depth.source=file", "data.depth.kind=depth", "data.depth.model=zoedepth",
        f"data.depth.checkpoint={zoe_dir}", f"data.depth.folder={depth_folder}",
    ]


class Interrupt(RuntimeError):
    pass


def test_depth_cache_writes_metric_depth_read_inverted_and_resumes(tmp_path, zoe_dir, monkeypatch):
    depth_folder = tmp_path / "depth"
    argv = ["depth-cache", str(REPO / "experiments" / "tiny.yaml"), *_overrides(zoe_dir, depth_folder)]
    calls = []
    raw = ZoeDepthDepth.raw

    def counted(self, image):
        calls.append(image.shape)
        if len(calls) == 5 and interrupt:  # the first of image 3's two passes (image, flipped image)
            raise Interrupt("simulated crash")
        return raw(self, image)

    monkeypatch.setattr(ZoeDepthDepth, "raw", counted)
    interrupt = True
    with pytest.raises(Interrupt):
        main(argv)
    out = depth_folder / "layered"
    assert len(list(out.glob("*.npy"))) == 2 and not list(out.glob(".*tmp"))  # atomic writes, nothing partial
    interrupt, calls[:] = False, []
    assert main(argv) == 0
    assert len(calls) == 2 * (N_IMAGES - 2) and len(list(out.glob("*.npy"))) == N_IMAGES  # only the missing ones
    calls.clear()
    assert main(argv) == 0 and calls == []  # everything present: nothing recomputed
    meta = json.loads((out / "depth_meta.json").read_text())
    assert meta["kind"] == "depth" and meta["preprocess"] == "official" and meta["side"] is None

    # the maps are what transformers' own ZoeDepth pipeline gives for the image
    sample = build_dataset("layered", "", "test", length=N_IMAGES, size=64)[0]
    ref = _hf_pipeline(zoe_dir, sample.image)
    cached = np.load(out / f"{sample.id.rsplit('/', 1)[-1]}.npy")
    assert cached.shape == (64, 64) and cached.std() > 1e-3 and np.abs(cached - ref).max() < 1e-5

    # read back through the config's depth source: kind "depth", so the nearest pixel (smallest metres) -> 1
    from ois_lightning.data.splits import build_split

    cfg = load_config(REPO / "experiments" / "tiny.yaml", _overrides(zoe_dir, depth_folder))
    read = build_split(cfg, "layered", "test")[0]
    assert read.depth_kind == "depth" and np.array_equal(read.depth, cached)
    order_depth = normalize_depth(torch.from_numpy(read.depth)[None, None], read.depth_kind)[0, 0]
    assert order_depth.flatten()[int(np.argmin(cached))] == 1 and order_depth.flatten()[int(np.argmax(cached))] == 0
    with pytest.raises(DataError, match="depth_meta.json: maps are of kind 'depth'"):
        DepthFolder(build_dataset("layered", "", "test", length=N_IMAGES, size=64), out, "disparity")


def test_depth_cache_at_the_input_size_on_request(tmp_path, zoe_dir, monkeypatch):
    """data.depth.preprocess=input: longer side at model.input_size (112 -> 128, a multiple of 32), no padding."""
    calls = []
    raw = ZoeDepthDepth.raw
    monkeypatch.setattr(ZoeDepthDepth, "raw", lambda self, image: calls.append(tuple(image.shape)) or raw(self, image))
    argv = ["depth-cache", str(REPO / "experiments" / "tiny.yaml"), *_overrides(zoe_dir, tmp_path),
            "data.layered.test_length=1", "data.depth.preprocess=input"]
    assert main(argv) == 0 and calls == [(1, 3, 128, 128)]
    meta = json.loads((tmp_path / "layered" / "depth_meta.json").read_text())
    assert meta["preprocess"] == "input" and meta["side"] == 112
    from transformers import ZoeDepthForDepthEstimation

    hf = ZoeDepthForDepthEstimation.from_pretrained(str(zoe_dir), local_files_only=True).eval()
    sample = build_dataset("layered", "", "test", length=1, size=64)[0]
    x = torch.from_numpy(sample.image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        x = F.interpolate(x, (128, 128), mode="bilinear", antialias=True)
        ref = hf(pixel_values=(x - 0.5) / 0.5).predicted_depth
    ref = F.interpolate(ref[:, None], (64, 64), mode="bilinear", align_corners=False)[0, 0].numpy()
    cached = np.load(tmp_path / "layered" / f"{sample.id.rsplit('/', 1)[-1]}.npy")
    assert cached.std() > 1e-3 and np.abs(cached - ref).max() < 1e-5
    assert np.abs(cached - _hf_pipeline(zoe_dir, sample.image)).max() > 1e-4  # not the official pipeline


def test_depth_cache_refuses_a_folder_of_another_model(tmp_path, zoe_dir, capsys):
    depth_folder = tmp_path / "depth"
    (depth_folder / "layered").mkdir(parents=True)
    meta = {"kind": "disparity", "model": "dav2-vitb", "checkpoint": None, "preprocess": "official", "side": None}
    (depth_folder / "layered" / "depth_meta.json").write_text(json.dumps(meta))
    argv = ["depth-cache", str(REPO / "experiments" / "tiny.yaml"), *_overrides(zoe_dir, depth_folder)]
    assert main(argv) == 2
    assert "holds depth maps of" in capsys.readouterr().err


def test_depth_model_config_errors(zoe_dir, tmp_path):
    base = _overrides(zoe_dir, tmp_path)
    with pytest.raises(ConfigError, match="set data.depth.kind=depth"):
        load_config(None, base + ["data.depth.kind=disparity"])
    with pytest.raises(ConfigError, match="is not one of"):
        load_config(None, base + ["data.depth.model=midas"])
    with pytest.raises(ConfigError, match="unused with data.depth.source=gt"):
        load_config(None, base + ["data.depth.source=gt"])
    with pytest.raises(Exception, match="needs data.depth.checkpoint = a local HF ZoeDepth directory"):
        build_depth_model("zoedepth", tmp_path / "nothing")


def test_depth_cache_of_the_backbone_head_defaults_to_disparity(tmp_path):
    """Without data.depth.model the backbone's own DAv2-style head is cached (kind disparity)."""
    argv = ["depth-cache", str(REPO / "experiments" / "tiny.yaml"), *TINY, "data.test=[layered]",
            "data.layered.test_length=2", "data.layered.size=64", f"data.depth.folder={tmp_path}"]
    assert main(argv) == 0
    assert json.loads((tmp_path / "layered" / "depth_meta.json").read_text())["kind"] == "disparity"
    assert len(list((tmp_path / "layered").glob("*.npy"))) == 2


@pytest.mark.parametrize("row,cls", [("dav1", DepthAnythingDepth), ("zoedepth", ZoeDepthDepth)])
def test_table6_rows_order_clicks_with_their_own_depth_model(row, cls, tmp_path, zoe_dir, monkeypatch):
    """`ois eval` of a Table 6 row (tiny widths, depth from the model): the row's separate depth model (DAv1
    random init, or the tiny ZoeDepth directory) predicts the depth of every image it evaluates. DAv1 runs at the
    input size (`data.depth.preprocess=input`): its official 518 px preprocessing, a ViT-B at 518 px on one thread
    for each image, is tested in test_backbone_fidelity.py."""
    calls = []
    raw = cls.raw
    monkeypatch.setattr(cls, "raw", lambda self, image: calls.append(image.shape) or raw(self, image))
    checkpoint = [f"data.depth.checkpoint={zoe_dir}"] if row == "zoedepth" else ["data.depth.preprocess=input"]
    argv = ["eval", str(REPO / "experiments" / "table6" / f"{row}.yaml"), *TINY, "data.test=[layered]",
            "data.layered.test_length=2", "data.layered.size=64", "data.depth.source=model", *checkpoint,
            "model.backbone.random_init=true",
            "clicks.max_eval=5", "logger.kind=none", f"output_dir={tmp_path}"]
    assert main(argv) == 0
    assert len(calls) == (4 if row == "zoedepth" else 2)  # per image: one pass (ZoeDepth: + the flipped image)
    assert json.loads((tmp_path / "results.json").read_text())["config"]["data"]["depth"]["model"] == \
        ("dav1-vitb" if row == "dav1" else "zoedepth")

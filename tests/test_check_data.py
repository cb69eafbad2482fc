"""`ois check-data`, the data check at the start of `ois train`, truncated images, and user errors (data,
checkpoint) shown as one line with the traceback behind --debug."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ois_lightning.cli import main
from ois_lightning.config.schema import ConfigError
from ois_lightning.config.load import load_config
from ois_lightning.data.base import DataError, MissingFile, UnreadableFile, read_image, read_mask
from ois_lightning.data.splits import build_split
from ois_lightning.data.truncation import is_truncated
from ois_lightning.model import build_model

from .helpers import REPO, TINY, run_warm


TINY_YAML = str(REPO / "experiments" / "tiny.yaml")
H, W = 48, 64
# GrabCut in `data.train`, one generated scene each in val / test, depth from the model.
SMALL = TINY + ["data.val=[layered]", "data.test=[layered]", "data.layered.val_length=1", "data.layered.test_length=1",
                "data.layered.size=112", "data.depth.source=model", "logger.kind=none"]


def write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def image(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def mask(h: int = H, w: int = W, band: bool = True, empty: bool = False) -> np.ndarray:
    """GrabCut-coded mask: 255 object, 128 ignore band, 0 background."""
    m = np.zeros((h, w), np.uint8)
    if not empty:
        if band:
            m[8:40, 14:50] = 128
        m[10:38, 16:48] = 255
    return m


def clean_tree(root: Path) -> Path:
    """GrabCut layout (data_GT/ images, boundary_GT/ .bmp masks): two objects (one with an ignore band) and an
    empty mask."""
    write(root / "data_GT" / "ok1.jpg", image(1))
    write(root / "boundary_GT" / "ok1.bmp", mask())
    write(root / "data_GT" / "ok2.png", image(2))
    write(root / "boundary_GT" / "ok2.bmp", mask(band=False))
    write(root / "data_GT" / "empty.jpg", image(3))
    write(root / "boundary_GT" / "empty.bmp", mask(empty=True))
    return root


def bad_tree(root: Path) -> Path:
    """The clean tree plus a corrupt image, a truncated JPEG, a size-mismatched mask and an image without mask."""
    clean_tree(root)
    (root / "data_GT" / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a JPEG " * 20)
    write(root / "boundary_GT" / "corrupt.bmp", mask())
    jpeg = write(root / "data_GT" / "cut.jpg", image(4)).read_bytes()
    (root / "data_GT" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    write(root / "boundary_GT" / "cut.bmp", mask())
    write(root / "data_GT" / "big.png", image(5))
    write(root / "boundary_GT" / "big.bmp", mask(h=H + 10))
    write(root / "data_GT" / "lonely.jpg", image(6))
    (root / "data_GT" / "zero.jpg").write_bytes(b"")  # zero-byte files: OpenCV asserts on an empty buffer
    write(root / "boundary_GT" / "zero.bmp", mask())
    write(root / "data_GT" / "nomask.jpg", image(7))
    (root / "boundary_GT" / "nomask.bmp").write_bytes(b"")
    return root


def check_data(root: Path, capsys, *extra: str) -> tuple[int, str]:
    code = main(["check-data", TINY_YAML, *SMALL, "data.train=[grabcut]", f"data.paths.grabcut={root}", *extra])
    return code, capsys.readouterr().out


def line_with(out: str, *needles: str) -> str:
    found = [ln for ln in out.splitlines() if all(n in ln for n in needles)]
    assert len(found) == 1, (needles, out)
    return found[0]


def test_check_data_reports_every_problem_by_file_in_one_run(tmp_path, capsys):
    root = bad_tree(tmp_path / "GrabCut")
    code, out = check_data(root, capsys)
    assert code == 1
    images = root / "data_GT"
    line_with(out, "unreadable or truncated:", str(images / "corrupt.jpg"), "cannot read image")
    line_with(out, "unreadable or truncated:", str(images / "cut.jpg"), "truncated")
    line_with(out, "unreadable or truncated:", str(images / "zero.jpg"), "image file is empty (0 bytes")
    line_with(out, "unreadable or truncated:", str(root / "boundary_GT" / "nomask.bmp"), "mask file is empty")
    mismatch = line_with(out, "size mismatch:", str(root / "boundary_GT" / "big.bmp"))
    assert str(images / "big.png") in mismatch and f"{W}x{H + 10}" in mismatch and f"{W}x{H}" in mismatch
    line_with(out, "missing file:", str(images / "lonely.jpg"), "no mask file")
    line_with(out, "empty mask: grabcut/empty")
    summary = line_with(out, "train/grabcut:")
    assert summary.startswith("train/grabcut: 8 images, 2 objects, 1 empty masks, 1 with ignore pixels")
    assert "unreadable or truncated 4, size mismatch 1, missing file 1" in summary
    assert "check-data: 6 problems that would stop a run" in out


def test_check_data_on_a_clean_tree_exits_0_with_counts(tmp_path, capsys):
    code, out = check_data(clean_tree(tmp_path / "GrabCut"), capsys)
    assert code == 0
    assert line_with(out, "train/grabcut:").startswith(
        "train/grabcut: 3 images, 2 objects, 1 empty masks, 1 with ignore pixels | problems: unreadable or "
        "truncated 0, size mismatch 0, missing file 0")
    assert line_with(out, "val/layered:").startswith("val/layered: 1 images")
    assert "check-data: no problems" in out


def test_a_noise_mask_is_a_warning_naming_it(tmp_path, capsys):
    """A mask of random noise reads fine and stops nothing, but check-data says it is not a plausible object."""
    root = clean_tree(tmp_path / "GrabCut")
    write(root / "data_GT" / "noise.png", image(8))
    write(root / "boundary_GT" / "noise.bmp", (np.random.default_rng(0).random((H, W)) < 0.5).astype(np.uint8) * 255)
    code, out = check_data(root, capsys)
    assert code == 0 and "check-data: no problems" in out
    warning = line_with(out, "warning: implausible mask:")
    assert "grabcut/noise object 0" in warning and "on its boundary" in warning and "pieces" in warning
    assert "ok1" not in out.split("warning:")[1] and len(out.split("warning:")) == 2  # solid masks pass


def test_check_data_loads_the_weights_files_as_training_will(tmp_path, capsys):
    """A weights file in the Depth Anything V2 layout (the tiny net's, as `ois pretrain depth` writes it) loads;
    one with a tensor missing or no file at all is a problem line naming it, after the data report."""
    from ois_lightning.pretrain.depth import init_backbone

    root, good = clean_tree(tmp_path / "GrabCut"), tmp_path / "depth_tiny.pth"
    state = init_backbone(0).state_dict()
    torch.save(state, good)
    code, out = check_data(root, capsys, f"model.backbone.checkpoint={good}")
    assert code == 0 and line_with(out, "weights:") == f"weights: model.backbone.checkpoint={good} loaded"
    dropped = next(iter(state))
    torch.save({k: v for k, v in state.items() if k != dropped}, tmp_path / "cut.pth")
    code, out = check_data(root, capsys, f"model.backbone.checkpoint={tmp_path / 'cut.pth'}")
    assert code == 1 and dropped in line_with(out, "weights:", "cut.pth")
    assert "check-data: 1 problems that would stop a run" in out
    code, out = check_data(root, capsys, f"model.backbone.checkpoint={tmp_path / 'none.pth'}")
    assert code == 1 and "checkpoint not found" in line_with(out, "weights:", "none.pth")
    code, out = check_data(root, capsys)
    assert code == 0 and line_with(out, "weights:") == "weights: none set (tiny needs none)"


def test_train_fails_on_a_missing_mask_before_building_a_model(tmp_path, capsys, monkeypatch):
    class Reached(Exception):
        pass

    def no_model(cfg):
        raise Reached

    monkeypatch.setattr("ois_lightning.lit.train.OISLitModule", no_model)
    root = clean_tree(tmp_path / "GrabCut")
    write(root / "data_GT" / "lonely.jpg", image(6))
    argv = ["train", TINY_YAML, *SMALL, "data.train=[grabcut]", f"data.paths.grabcut={root}",
            f"output_dir={tmp_path / 'run'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ois: data error: 1 data problems") and "Traceback" not in err
    assert f"data.train=grabcut: {root / 'data_GT' / 'lonely.jpg'}: no mask file" in err
    with pytest.raises(Reached):  # train.check_data=false: on to the model, the loader would fail later
        main(argv + ["train.check_data=false"])


def test_data_error_is_one_line_and_debug_reraises(tmp_path, capsys):
    argv = ["eval", TINY_YAML, *SMALL, "model.backbone.random_init=true", "data.test=[grabcut]",
            f"data.paths.grabcut={tmp_path / 'nowhere'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"ois: data error: {tmp_path / 'nowhere' / 'data_GT'}: folder not found "
                                "(expected a directory)"]
    with pytest.raises(DataError, match="folder not found"):
        main(["--debug", *argv])
    with pytest.raises(DataError, match="folder not found"):
        main([*argv, "--debug"])


@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n", "truncated"])
def test_unreadable_checkpoint_is_one_line(tmp_path, capsys, content):
    ckpt = tmp_path / "model.ckpt"
    if content == "truncated":
        torch.save({"state_dict": {"model.w": torch.zeros(1000)}}, ckpt)
        content = ckpt.read_bytes()[:-200]
    ckpt.write_bytes(content)
    assert main(["eval", TINY_YAML, *SMALL, f"ckpt={ckpt}"]) == 2
    err = capsys.readouterr().err
    reason = "not a PyTorch checkpoint" if content.startswith(b"not") else "cannot read"
    assert len(err.splitlines()) == 1 and err.startswith(f"ois: checkpoint error: ckpt={ckpt}: {reason}")
    assert "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path):
    ckpt = tmp_path / "empty.ckpt"
    ckpt.write_bytes(b"")
    argv = [sys.executable, "-m", "ois_lightning", "eval", TINY_YAML, *SMALL, f"ckpt={ckpt}"]
    plain = run_warm(argv)
    debug = run_warm(argv + ["--debug"])
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "CheckpointError" in debug.stderr


def test_checkpoint_of_another_input_size_is_an_error_naming_both(tmp_path, capsys):
    from ois_lightning.checkpoint import load_weights

    cfg = load_config(TINY_YAML, [*SMALL, f"ckpt={tmp_path / 'm.ckpt'}"])
    model = build_model(cfg.model, cfg.data.depth)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"model": {"input_size": 224}}}, tmp_path / "m.ckpt")
    with pytest.raises(ConfigError, match=r"trained with model.input_size=224 \(evaluated with 112\);"):
        load_weights(cfg)
    cfg.eval.allow_config_mismatch = True  # the override: the same list as one warning line
    load_weights(cfg)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "warning" in err[0] and "model.input_size=224 (evaluated with 112)" in err[0]
    torch.save({"state_dict": state, "hyper_parameters": {"model": {"input_size": 112}}}, tmp_path / "m.ckpt")
    load_weights(cfg)
    assert capsys.readouterr().err == ""


def test_depth_source_without_depth_names_the_dataset(tmp_path):
    root = clean_tree(tmp_path / "GrabCut")
    cfg = load_config(TINY_YAML, [*TINY, f"data.paths.grabcut={root}", "data.depth.source=gt"])
    with pytest.raises(ConfigError, match="dataset grabcut has no depth maps .* use data.depth.source=model"):
        build_split(cfg, "grabcut", "test")
    cfg = load_config(TINY_YAML, [*TINY, f"data.paths.grabcut={root}", "data.depth.source=file",
                                  f"data.depth.folder={tmp_path / 'depth'}"])
    with pytest.raises(MissingFile, match="no depth folder for dataset grabcut"):
        build_split(cfg, "grabcut", "test")


def test_truncated_images_are_errors(tmp_path):
    jpeg = write(tmp_path / "a.jpg", image(0)).read_bytes()
    png = write(tmp_path / "a.png", image(0)).read_bytes()
    assert not is_truncated(jpeg) and not is_truncated(png) and not is_truncated(jpeg + b"\0" * 64)
    for data, name in ((jpeg, "cut.jpg"), (png, "cut.png")):
        (tmp_path / name).write_bytes(data[: len(data) * 3 // 4])
        with pytest.raises(UnreadableFile, match="image file is truncated"):
            read_image(tmp_path / name)
    with pytest.raises(UnreadableFile, match="mask file is truncated"):
        read_mask(tmp_path / "cut.png")


def test_truncation_check_has_no_false_positive_on_real_grabcut(grabcut_root):
    files = sorted(p for p in grabcut_root.rglob("*") if p.suffix.lower() in (".jpg", ".png", ".bmp"))
    assert len(files) == 100
    for path in files:
        data = path.read_bytes()
        assert not is_truncated(data), path
        reader = read_mask if path.parent.name == "boundary_GT" else read_image
        assert reader(path).shape[:2] == cv2.imread(str(path)).shape[:2]
        if path.suffix.lower() == ".jpg":
            assert is_truncated(data[: len(data) // 2]), path

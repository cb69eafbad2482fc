"""Bad configs, many of them: each is exactly one line on stderr from `ois print-config` naming the file (or the
command line), the key and the value, exit code 2 and no traceback; none is accepted silently."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from ois_lightning.checkpoint import config_from_checkpoint
from ois_lightning.cli import main
from ois_lightning.config.load import LOCAL_ENV
from ois_lightning.config.allowed import RANGES

from .helpers import REPO, TINY, save_checkpoint


TINY_YAML = REPO / "experiments/tiny.yaml"
ROW = f"base: {TINY_YAML}\n"  # a valid row; the cases add one mistake


class Case(NamedTuple):
    id: str
    yaml: str  # the row file's text (row.yaml); other files in `files`
    needles: tuple[str, ...]  # key and value as the error line must show them
    where: str = "row.yaml"  # file the line must name, or "command line"
    overrides: tuple[str, ...] = ()
    files: tuple[tuple[str, str], ...] = ()


def _row(key: str, value: str) -> str:
    """The valid row with the dotted ``key`` set to the YAML ``value``."""
    parts = key.split(".")
    lines = [f"{'  ' * i}{p}:" for i, p in enumerate(parts[:-1])]
    return ROW + "\n".join(lines + [f"{'  ' * (len(parts) - 1)}{parts[-1]}: {value}"]) + "\n"


def _value(key: str, value: str, *needles: str) -> Case:
    return Case(f"{key}={value}", _row(key, value), (key, *(needles or (value,))))


def _cli(override: str, *needles: str) -> Case:
    return Case(f"cli:{override}", ROW, needles, "command line", (override,))


UNKNOWN_KEYS = [_value(k, v) for k, v in [
    ("nme", "x"), ("model.backbone.nam", "tiny"), ("model.sparse.dimm", "64"),
    ("data.depth.sourc", "gt"), ("data.layered.sizes", "3"), ("clicks.max_evals", "3"), ("train.lrr", "1"),
    ("logger.projectt", "x"),
]] + [_value("model.backbon", "{name: tiny}", "model.backbon", "{'name': 'tiny'}"),
      _value("eval.flipp", "true", "eval.flipp", "True"),
      _cli("model.order.enable=false", "model.order.enable", "False"), _cli("data.foo=1", "data.foo", "1")]

WRONG_TYPES = [
    _value("train.lr", "fast"), _value("model.input_size", "big"), _value("model.order.enabled", "maybe"),
    _value("data.batch_size", "2.5"), _value("model", "3"), _value("data.paths", "[a]", "data.paths", "['a']"),
    _value("model.sparse.dim", "{a: 1}", "model.sparse.dim"),
    _cli("seed=x", "seed", "'x'"), _cli("model.sparse.dim=[1]", "model.sparse.dim", "[1]"),
]

OUT_OF_RANGE = [_value(k, v, k, n) for k, v, n in [
    ("model.order.sigma_init", "-1", "-1.0"), ("model.order.sigma_init", "0", "0.0"),
    ("model.dense.radius", "-3", "-3"),
    ("data.batch_size", "0", "0"), ("data.num_workers", "-1", "-1"), ("data.merge_prob", "1.5", "1.5"),
    ("data.stuff_prob", "-0.1", "-0.1"), ("clicks.threshold", "1.0", "1.0"), ("clicks.max_eval", "0", "0"),
    ("clicks.target_iou", "0", "0.0"), ("eval.cache_max_gb", "0", "0.0"), ("eval.zoom_in_size", "-14", "-14"),
    ("train.lr", "0", "0.0"), ("train.max_epochs", "0", "0"), ("train.max_steps", "-2", "-2"),
    ("train.gradient_clip_val", "-1", "-1.0"), ("seed", "-1", "-1"), ("model.input_size", "0", "0"),
    ("model.sparse.num_heads", "0", "0"), ("data.layered.size", "4", "4"), ("train.threads", "0", "0"),
    ("eval.threads", "-2", "-2"),
]] + [_cli("model.order.sigma_init=-1", "model.order.sigma_init", "-1.0")]

EMPTY = [
    _value("name", "''", "name", "''"), _value("data.root", "''", "data.root", "''"),
    _value("output_dir", "' '", "output_dir", "' '"), _value("data.test", "[]", "data.test", "[]"),
    _value("model", "", "model", "None"), _value("train.lr", "", "train.lr", "None"),
    _value("data.paths.davis", "''", "data.paths.davis", "''"), _cli("data.train=[]", "data.train", "[]"),
]

BAD_CHOICES = [_value(k, v) for k, v in [
    ("model.order.clicks", "both"), ("model.sparse.block_order", "random"), ("train.precision", "fp8"),
    ("train.accelerator", "quantum"), ("data.depth.kind", "inverse"), ("data.depth.preprocess", "native"),
    ("data.depth.source", "lidar"), ("eval.resize", "crop"), ("logger.kind", "tensorboard"),
    ("model.backbone.name", "vit-huge"), ("train.devices", "two"), ("eval.precision", "fp8"),
    ("model.fusion", "concat"), ("model.decoder.logits", "half"), ("train.lr_schedule", "step"),
]] + [_value("data.train", "[nope]", "data.train", "'nope'"), _cli("train.strategy=ddp_typo", "train.strategy",
                                                                   "ddp_typo")]

BASE_CHAIN = [
    Case("base-missing", "base: nowhere.yaml\n", ("base", "nowhere.yaml")),
    Case("base-loop", "base: other.yaml\n", ("base", "row.yaml"), "other.yaml",
         files=(("other.yaml", "base: row.yaml\n"),)),
    Case("base-self", "base: row.yaml\n", ("base", "row.yaml")),
    Case("base-not-a-path", "base: 3\n", ("base", "3")),
    Case("base-empty", "base: ''\n", ("base", "''")),
]

YAML_SYNTAX = [
    Case("yaml-unclosed-list", ROW + "model: [unclosed\n", ("line", "not valid YAML")),
    Case("yaml-unclosed-flow", ROW + "model:\n  backbone: {name: tiny\n", ("line", "not valid YAML")),
    Case("yaml-tab", ROW + "model:\n\tbackbone: x\n", ("line", "not valid YAML")),
    Case("yaml-top-list", "- a\n- b\n", ("mapping", "['a', 'b']")),
    Case("yaml-bad-indent", ROW + "train:\n  lr: 1\n bad: 2\n", ("line", "not valid YAML")),
]

DUPLICATES = [
    Case("dup-nested", ROW + "train:\n  lr: 1.0\n  lr: 2.0\n", ("duplicate key 'lr'", "'2.0'", "line 4")),
    Case("dup-top", ROW + "name: a\nname: b\n", ("duplicate key 'name'", "'b'")),
    Case("dup-section", ROW + "train:\n  lr: 1.0\ntrain:\n  seed: 2\n", ("duplicate key 'train'",)),
    Case("dup-in-base", "base: other.yaml\n", ("duplicate key 'seed'", "'2'"), "other.yaml",
         files=(("other.yaml", ROW + "seed: 1\nseed: 2\n"),)),
]

RELATIONS = [
    _value("clicks.min_eval", "30", "clicks.min_eval=30", "clicks.max_eval=20"),
    Case("heads", _row("model.sparse.num_heads", "5"), ("model.sparse.dim=64", "num_heads=5")),
    _value("model.input_size", "100", "model.input_size=100", "patch size"),
    _value("model.backbone.name", "dav2-vitb", "model.backbone.checkpoint=null", "model.backbone.random_init=true"),
    _value("model.fusion", "dense_self_attention", "model.fusion=dense_self_attention"),
    Case("unresolved", ROW + "name: ${nope}\n", ("name", "nope")),
    _cli("novalue", "novalue"),
]

# NaN compares false with every bound: each numeric key refuses NaN and +-inf, in YAML and on the command line
NON_FINITE = [_value(key, ".nan", key) for key in RANGES] + [_cli(f"{key}=-inf", key) for key in RANGES]

CASES = (UNKNOWN_KEYS + WRONG_TYPES + OUT_OF_RANGE + EMPTY + BAD_CHOICES + BASE_CHAIN + YAML_SYNTAX + DUPLICATES
         + RELATIONS + NON_FINITE)


def test_there_are_enough_cases():
    assert len(CASES) >= 50 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_config_is_one_line_naming_file_key_and_value(case: Case, tmp_path: Path, capsys):
    row = tmp_path / "row.yaml"
    row.write_text(case.yaml)
    for name, text in case.files:
        (tmp_path / name).write_text(text)
    code = main(["print-config", str(row), *case.overrides])
    out, err = capsys.readouterr()
    assert code == 2, f"accepted silently:\n{out[-400:]}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ois: config error: ") and "Traceback" not in err, err
    where = case.where if case.where == "command line" else str(tmp_path / case.where)
    for needle in (where, *case.needles):
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


# `ois eval --ckpt CKPT key=value`: the checkpoint's stored config goes through the same loader as a YAML file
CKPT_OVERRIDES = ["clicks.threshold=2.0", "eval.precision=foo", "data.batch_size=0", "train.strategy=ddp_typo",
                  "model.order.enable=false", "clicks.max_eval=0", "eval.zoom_in_size=-14", "seed=x",
                  "model.sparse.num_heads=5", "clicks.nope=1"]


@pytest.fixture(scope="module")
def stored_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "stored.ckpt", config=str(TINY_YAML))


@pytest.mark.parametrize("override", CKPT_OVERRIDES)
def test_eval_from_checkpoint_refuses_as_from_yaml(override: str, stored_ckpt: Path, capsys):
    assert main(["print-config", str(TINY_YAML), *TINY, override]) == 2
    from_yaml = capsys.readouterr().err
    assert main(["eval", "--ckpt", str(stored_ckpt), override]) == 2
    from_ckpt = capsys.readouterr().err
    assert len(from_ckpt.splitlines()) == 1 and from_ckpt.startswith("ois: config error: command line"), from_ckpt
    assert from_ckpt == from_yaml


def test_eval_from_checkpoint_applies_the_local_layer(stored_ckpt: Path, tmp_path: Path, monkeypatch):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "local.yaml").write_text("data:\n  root: /datasets/here\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(LOCAL_ENV)
    cfg = config_from_checkpoint(stored_ckpt, overrides=["clicks.max_eval=7"])
    assert (cfg.data.root, cfg.clicks.max_eval, cfg.ckpt) == ("/datasets/here", 7, str(stored_ckpt))
    monkeypatch.setenv(LOCAL_ENV, "")  # no local layer: the stored value
    assert config_from_checkpoint(stored_ckpt).data.root != "/datasets/here"

"""Typed configs: base chains, the local layer, provenance, random weights only on request, the checkpoint's
config against the evaluated one, and one clear error line per mistake."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import sys
import typing
from pathlib import Path

import pytest

from ois_lightning.config.allowed import CHOICES, FREE_TEXT, RANGES
from ois_lightning.config.schema import Config, ConfigError, to_dict
from ois_lightning.config.checks import check_checkpoint_config, config_mismatch
from ois_lightning.config.load import load_config, load_config_with_sources, source_comments
from ois_lightning.config.checks import REGISTRIES
from ois_lightning.config.load import LOCAL_ENV

from .helpers import REPO, run_warm


TINY_YAML = REPO / "experiments/tiny.yaml"
RANDOM = ["model.backbone.random_init=true"]


def test_base_chain_and_override_resolve():
    cfg = load_config(REPO / "experiments/table4/wo_order.yaml", ["seed=3", *RANDOM])
    assert cfg.model.order.enabled is False
    assert cfg.model.backbone.name == "dav2-vitb"  # from base.yaml through full.yaml
    assert cfg.row == "wo_order" and cfg.table == "table4"
    assert cfg.output_dir == "runs/table4/wo_order/seed3"  # the layout `ois table runs/table4` reads


@pytest.mark.parametrize(
    "override,needle",
    [
        ("model.ordr.enabled=false", "model.ordr"),
        ("model.order.enabled=maybe", "'maybe'"),
        ("model.sparse.dim=lots", "model.sparse.dim"),
        ("model.order.clicks=both", "'both'"),
    ],
)
def test_bad_override_names_key_value_and_source(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config(TINY_YAML, [override])
    msg = str(e.value)
    assert needle in msg and "command line" in msg and "\n" not in msg


def test_bad_key_in_file_names_the_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: %s\nmodel:\n  backbon:\n    name: tiny\n" % (REPO / "experiments/base.yaml"))
    with pytest.raises(ConfigError) as e:
        load_config(bad)
    assert str(bad) in str(e.value) and "model.backbon" in str(e.value) and "tiny" in str(e.value)


def test_bad_type_in_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*train\.lr.*'fast'"):
        load_config(bad)


def test_missing_base_file(tmp_path: Path):
    cfg = tmp_path / "child.yaml"
    cfg.write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"child\.yaml: base file 'nowhere\.yaml' not found"):
        load_config(cfg)


def test_no_prompt_path_rejected():
    with pytest.raises(ConfigError, match="no prompt path"):
        load_config(TINY_YAML, ["model.sparse.enabled=false", "model.dense.enabled=false"])


@pytest.mark.parametrize("override,message", [
    ("clicks.target_iou=1.01", r"clicks.target_iou=1.01 must be in \(0, 1\]"),
    ("clicks.min_eval=0", r"clicks.min_eval=0 must be >= 1"),
    ("clicks.min_eval=21", r"clicks.min_eval=21 must be in 1..clicks.max_eval=20"),
])
def test_early_stop_settings_are_checked(override: str, message: str):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY_YAML, [override])
    assert load_config(TINY_YAML, ["clicks.target_iou=0.9"]).clicks.target_iou == 0.9


@pytest.mark.parametrize("override,message", [
    ("model.order.sigma_init=-1", r"command line 'model.order.sigma_init=-1': model.order.sigma_init=-1.0 must be > 0"),
    ("model.dense.radius=-3", r"model.dense.radius=-3 must be >= 1"),
    ("data.batch_size=0", r"data.batch_size=0 must be >= 1"),
    ("train.precision=fp8", r"train.precision='fp8' is not one of 32-true, 16-mixed"),
    ("train.max_steps=0", r"train.max_steps=0 must be >= 1 or -1"),
    ("data.depth.preprocess=native", r"data.depth.preprocess='native' is not one of official, input"),
    ("data.test=[davis,nope]", r"data.test=\['davis', 'nope'\]: 'nope' is not one of"),
    ("train.devices=two", r"train.devices='two' must be auto"),
    ("train.strategy=ddp_typo", r"train.strategy='ddp_typo' is not one of"),
])
def test_values_out_of_range_or_choices_fail_at_load(override: str, message: str):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY_YAML, [override])


@pytest.mark.parametrize("override", ["train.max_steps=-1", "train.devices=[0,1]", "train.devices='0,1'",
                                      "train.precision=bf16-mixed", "train.strategy=ddp", "data.merge_prob=1"])
def test_valid_edge_values_load(override: str):
    load_config(TINY_YAML, [override])


def test_settings_that_would_do_nothing_or_break_later_are_refused():
    with pytest.raises(ConfigError, match=r"data.depth.model=dav2-vits is unused: no part of the model reads depth"):
        load_config(TINY_YAML, ["model.order.enabled=false", "data.depth.source=model", "data.depth.model=dav2-vits"])
    with pytest.raises(ConfigError, match=r"model.input_size=1036 must be a multiple of mae-vitb's patch size 16"):
        load_config(TINY_YAML, ["model.backbone.name=mae-vitb", "model.input_size=1036", "data.depth.source=gt",
                                *RANDOM])
    with pytest.raises(ConfigError, match=r"model.backbone.name='vit-huge' is not one of"):
        load_config(TINY_YAML, ["model.backbone.name=vit-huge"])
    cfg = load_config(TINY_YAML, ["model.backbone.name=mae-vitb", "model.input_size=224", *RANDOM])
    assert cfg.model.input_size == 224


def test_random_weights_only_on_request():
    full = REPO / "experiments/table4/full.yaml"
    with pytest.raises(ConfigError, match=r"^experiments/base.yaml: model.backbone.checkpoint=null leaves the frozen "
                                          r"backbone model.backbone.name=dav2-vitb randomly initialised; set "
                                          r"model.backbone.checkpoint="):
        load_config(full)
    dav1 = REPO / "experiments/table6/dav1.yaml"
    with pytest.raises(ConfigError, match=r"table6/dav1.yaml: data.depth.checkpoint=null leaves data.depth.model="
                                          r"dav1-vitb randomly .*model.backbone.random_init=true"):
        load_config(dav1, ["model.backbone.checkpoint=b.pth"])
    assert load_config(dav1, RANDOM).data.depth.checkpoint is None
    assert load_config(full, ["model.backbone.freeze=false"]).model.backbone.checkpoint is None  # trained, not random


def test_weights_fill_null_checkpoints_by_network_name():
    mae = REPO / "experiments/table10/ois_mae.yaml"
    paths = ["weights.mae-vitb=mae.pth", "weights.dav2-vitb=dav2.pth"]
    cfg, sources = load_config_with_sources(mae, paths)
    assert (cfg.model.backbone.checkpoint, cfg.data.depth.checkpoint) == ("mae.pth", "dav2.pth")
    assert sources["model.backbone.checkpoint"] == "command line 'weights.mae-vitb=mae.pth' (weights.mae-vitb)"
    assert load_config(mae, [*paths, "model.backbone.checkpoint=x.pth"]).model.backbone.checkpoint == "x.pth"
    assert load_config(mae, [*paths, *RANDOM]).model.backbone.checkpoint is None  # random_init: no files read
    with pytest.raises(ConfigError, match=r"weights=\{.*\}: 'vit-huge' is not one of"):
        load_config(mae, [*paths, "weights.vit-huge=v.pth"])


@pytest.fixture
def layered_tree(tmp_path: Path) -> Path:
    """experiments-like folder: base.yaml <- rows/row.yaml, with a local.yaml beside the base."""
    (tmp_path / "rows").mkdir()
    tiny = TINY_YAML.read_text().replace("base: base.yaml\n", "")  # the chain's root is this base.yaml
    (tmp_path / "base.yaml").write_text(tiny.replace("data:\n", "data:\n  root: tracked\n"))
    (tmp_path / "rows" / "row.yaml").write_text("base: ../base.yaml\ndata:\n  num_workers: 2\n")
    (tmp_path / "local.yaml").write_text("data:\n  root: /scratch/data\n  paths:\n    davis: /scratch/DAVIS\n")
    return tmp_path / "rows" / "row.yaml"


def test_local_layer_over_the_chain_under_the_command_line(layered_tree: Path, monkeypatch):
    monkeypatch.delenv(LOCAL_ENV)
    cfg, sources = load_config_with_sources(layered_tree, ["data.paths.davis=/cli/DAVIS"])
    assert cfg.data.root == "/scratch/data" and cfg.data.paths.davis == "/cli/DAVIS" and cfg.data.num_workers == 2
    local = str(layered_tree.parent.parent / "local.yaml")
    assert sources["data.root"] == local and sources["data.paths.davis"] == "command line 'data.paths.davis=/cli/DAVIS'"
    assert sources["data.num_workers"] == str(layered_tree) and "data.layered.size" not in sources  # a default
    other = layered_tree.parent / "other.yaml"
    other.write_text("data:\n  root: /other\n")
    monkeypatch.setenv(LOCAL_ENV, str(other))
    assert load_config(layered_tree).data.root == "/other"
    monkeypatch.setenv(LOCAL_ENV, "")
    assert load_config(layered_tree).data.root == "tracked"
    monkeypatch.setenv(LOCAL_ENV, str(layered_tree.parent / "missing.yaml"))
    with pytest.raises(ConfigError, match=r"OIS_LOCAL_CONFIG=.*missing.yaml: file not found"):
        load_config(layered_tree)


def test_the_example_local_layer_loads_and_fills_the_weights(monkeypatch):
    monkeypatch.setenv(LOCAL_ENV, str(REPO / "experiments/local.example.yaml"))
    cfg, sources = load_config_with_sources(REPO / "experiments/table10/ois_mae.yaml")
    assert cfg.model.backbone.checkpoint.endswith("mae_pretrain_vit_base.pth")
    assert cfg.data.depth.checkpoint.endswith("depth_anything_v2_vitb.pth")
    assert sources["data.root"] == "experiments/local.example.yaml"


def test_local_layer_may_not_extend_a_base(layered_tree: Path, monkeypatch):
    monkeypatch.delenv(LOCAL_ENV)
    (layered_tree.parent.parent / "local.yaml").write_text("base: base.yaml\n")
    with pytest.raises(ConfigError, match=r"local.yaml: base='base.yaml' is not allowed in the local layer"):
        load_config(layered_tree)


def test_environment_supplies_paths_and_is_shown_as_the_source(monkeypatch):
    monkeypatch.setenv("OIS_DATA_ROOT", "/scratch/env-data")
    monkeypatch.setenv("OIS_DAV2_VITB", "/w/dav2.pth")
    cfg, sources = load_config_with_sources(REPO / "experiments/table4/full.yaml")
    assert cfg.data.root == "/scratch/env-data" and cfg.model.backbone.checkpoint == "/w/dav2.pth"
    assert sources["data.root"] == "env OIS_DATA_ROOT"
    assert sources["model.backbone.checkpoint"] == "env OIS_DAV2_VITB (weights.dav2-vitb)"
    assert cfg.weights["mae-vitb"] is None and "env OIS_MAE_VITB unset" in sources["weights.mae-vitb"]
    lines = source_comments(cfg, sources).splitlines()
    assert any(ln.startswith("# data.root = /scratch/env-data ") and ln.endswith("# env OIS_DATA_ROOT") for ln in lines)
    monkeypatch.delenv("OIS_DATA_ROOT")
    assert load_config(TINY_YAML).data.root == "data"


def test_print_config_ends_with_the_sources(capsys):
    from ois_lightning.cli import main

    assert main(["print-config", str(TINY_YAML), "data.root=/d"]) == 0
    out = capsys.readouterr().out
    assert "# data.root = /d" in out and out.rstrip().splitlines()[-1].startswith("# ")
    assert "model.order.sigma_init" not in out.split("# where")[1]
    assert main(["print-config", str(TINY_YAML), "--sources"]) == 0
    every = capsys.readouterr().out.split("# where")[1]
    assert "# model.input_size = 224" in every and "experiments/tiny.yaml" in every and "# default" in every


def test_eval_without_ckpt_needs_random_init():
    from ois_lightning.checkpoint import load_weights

    with pytest.raises(ConfigError, match=r"ckpt is not set: `ois eval` evaluates ckpt=PATH .*random_init=true"):
        load_weights(load_config(TINY_YAML))


def test_checkpoint_config_must_match_on_model_and_protocol_keys(capsys):
    cfg = load_config(TINY_YAML, ["ckpt=m.ckpt", "eval.flip=true"])
    stored = to_dict(load_config(TINY_YAML, ["model.order.clicks=pos", "clicks.max_extra=1", "seed=4",
                                             "model.backbone.checkpoint=elsewhere.pth", "clicks.target_iou=0.9",
                                             "clicks.min_eval=5"]))  # the early stop: free at evaluation
    assert config_mismatch(stored, cfg) == [("model.order.clicks", "pos", "pos_neg"), ("eval.flip", False, True)]
    with pytest.raises(ConfigError, match=r"ckpt=m.ckpt was trained with model.order.clicks=pos \(evaluated with "
                                          r"pos_neg\), eval.flip=False \(evaluated with True\); .*"
                                          r"eval.allow_config_mismatch=true"):
        check_checkpoint_config(stored, cfg)
    check_checkpoint_config({"model": {"input_size": 224}, "unknown": 1}, cfg)  # keys not stored: not compared
    check_checkpoint_config(None, cfg)
    check_checkpoint_config(stored, load_config(TINY_YAML, ["ckpt=m.ckpt", "eval.flip=true",
                                                            "eval.allow_config_mismatch=true"]))
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("ois: warning: ckpt=m.ckpt was trained with model.order.clicks=pos")


def _fields(cls: type, prefix: str = "") -> typing.Iterator[tuple[str, typing.Any]]:
    """(dotted key, type) of every leaf field of a schema dataclass."""
    for f in dataclasses.fields(cls):
        kind = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(kind):
            yield from _fields(kind, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", kind


FIELDS = dict(_fields(Config))


def test_every_numeric_field_has_a_range_and_every_table_key_exists():
    numeric = {k for k, t in FIELDS.items() if {int, float} & {t, *typing.get_args(t)} and t is not bool}
    assert numeric, "no numeric fields found"
    assert sorted(numeric - set(RANGES)) == [], "numeric fields without an entry in config.RANGES"
    assert sorted((set(RANGES) | set(CHOICES)) - set(FIELDS)) == [], "RANGES / CHOICES entries of no field"
    for key in CHOICES:
        assert str in {FIELDS[key], *typing.get_args(FIELDS[key])}, key


def _has_str(kind: typing.Any) -> bool:
    return kind is str or any(_has_str(a) for a in typing.get_args(kind))


def test_every_string_field_has_choices_a_registry_or_is_free_text():
    strings = {k for k, t in FIELDS.items() if _has_str(t)}
    tables = set(CHOICES) | set(REGISTRIES) | set(FREE_TEXT)
    assert sorted(strings - tables) == [], "string fields in none of CHOICES, REGISTRIES, FREE_TEXT"
    assert sorted(tables - set(FIELDS)) == [], "table entries of no field"


def test_cli_error_is_one_line(tmp_path: Path):
    proc = run_warm([sys.executable, "-m", "ois_lightning", "print-config", str(TINY_YAML), "seed=x"])
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "seed" in lines[0] and "'x'" in lines[0]


def test_print_config_params_vitb_near_paper():
    proc = run_warm([sys.executable, "-m", "ois_lightning", "print-config", str(REPO / "experiments/table4/full.yaml"),
                     *RANDOM, "--params"], check=True)
    assert "name: table4-full" in proc.stdout
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("parameters total"))
    total = float(line.split()[2].rstrip("M"))
    assert abs(total - 107.88) < 3.0, line  # paper Table 3: 107.88 M; difference explained in docs/architecture.md


def test_cli_version_and_overrides_after_an_option(capsys):
    from ois_lightning import __version__
    from ois_lightning.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"ois {__version__}"
    assert importlib.metadata.version("ois_lightning") == __version__  # pyproject reads it from the package
    assert main(["print-config", str(REPO / "experiments/tiny.yaml"), "--sources", "seed=3"]) == 0
    assert "\nseed: 3\n" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # anything else after the options stays an error
        main(["print-config", str(REPO / "experiments/tiny.yaml"), "--sources", "--bogus"])
    assert e.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err

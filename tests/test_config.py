"""Typed configs: base chains, overrides, and one clear error line per mistake."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ois_lightning.config import ConfigError, load_config

from .conftest import REPO


def test_base_chain_and_override_resolve():
    cfg = load_config(REPO / "experiments/table4/wo_order.yaml", ["seed=3"])
    assert cfg.model.order.enabled is False
    assert cfg.model.backbone.name == "dav2-vitb"  # from base.yaml through full.yaml
    assert cfg.row == "wo_order" and cfg.table == "table4"
    assert cfg.output_dir == "runs/table4-wo_order/seed3"


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
        load_config(REPO / "experiments/tiny.yaml", [override])
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
        load_config(REPO / "experiments/tiny.yaml", ["model.sparse.enabled=false", "model.dense.enabled=false"])


@pytest.mark.parametrize("override,message", [
    ("clicks.target_iou=1.01", r"clicks.target_iou=1.01 must be in \(0, 1\], or null"),
    ("clicks.min_eval=0", r"clicks.min_eval=0 must be in 1..clicks.max_eval=20"),
    ("clicks.min_eval=21", r"clicks.min_eval=21 must be in 1..clicks.max_eval=20"),
])
def test_early_stop_settings_are_checked(override: str, message: str):
    with pytest.raises(ConfigError, match=message):
        load_config(REPO / "experiments/tiny.yaml", [override])
    assert load_config(REPO / "experiments/tiny.yaml", ["clicks.target_iou=0.9"]).clicks.target_iou == 0.9


def test_settings_that_would_do_nothing_or_break_later_are_refused():
    tiny = REPO / "experiments/tiny.yaml"
    with pytest.raises(ConfigError, match=r"data.depth.model=dav2-vits is unused: no part of the model reads depth"):
        load_config(tiny, ["model.order.enabled=false", "data.depth.source=model", "data.depth.model=dav2-vits"])
    with pytest.raises(ConfigError, match=r"model.input_size=1036 must be a multiple of mae-vitb's patch size 16"):
        load_config(tiny, ["model.backbone.name=mae-vitb", "model.input_size=1036", "data.depth.source=gt"])
    with pytest.raises(ConfigError, match=r"model.backbone.name='vit-huge' is not one of"):
        load_config(tiny, ["model.backbone.name=vit-huge"])
    assert load_config(tiny, ["model.backbone.name=mae-vitb", "model.input_size=224"]).model.input_size == 224


def test_cli_error_is_one_line(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "ois_lightning", "print-config", str(REPO / "experiments/tiny.yaml"), "seed=x"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "seed" in lines[0] and "'x'" in lines[0]


def test_print_config_params_vitb_near_paper():
    proc = subprocess.run(
        [sys.executable, "-m", "ois_lightning", "print-config", str(REPO / "experiments/table4/full.yaml"), "--params"],
        capture_output=True, text=True, check=True,
    )
    assert "name: table4-full" in proc.stdout
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("parameters total"))
    total = float(line.split()[2].rstrip("M"))
    assert abs(total - 107.88) < 3.0, line  # paper Table 3: 107.88 M; difference explained in docs/architecture.md

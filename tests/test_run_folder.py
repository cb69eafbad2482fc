"""A run folder belongs to one set of settings and nothing a user made is lost: a second `ois train` with other
overrides (or a fresh start over a finished run) is one line naming what differs, ``restart=true`` moves the old run
aside byte for byte, ``ois eval`` of a run's checkpoint writes beside it, and a preempted offline W&B run resumes
with its id and steps (SIGTERM itself: tests/test_faults_train.py)."""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from ois_lightning.cli import main
from ois_lightning.config.load import load_config
from ois_lightning.protocol.results import collect
from ois_lightning.protocol.run_folder import ASIDE_DIR, SETTINGS_FILE, eval_dir

from .helpers import QUICK, SELF_TERMINATED, TINY_YAML, run_warm, wandb_records, wandb_steps

RUN = (*QUICK, "data.layered.train_length=8", "train.max_steps=4", "train.val_every_n_steps=3", "seed=4",
       "logger.kind=csv", "train.threads=1")

def ois_train(out: Path, *extra: str) -> int:
    return main(["train", TINY_YAML, *RUN, f"output_dir={out}", *extra])


def digests(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """SHA-256 of every file below ``folder`` (relative path -> digest), but those under ``skip`` folders."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.relative_to(folder).parts[0] not in skip}


def last_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_a_folder_holds_one_run_of_one_set_of_settings(tmp_path, capsys):
    out = tmp_path / "run"
    assert ois_train(out, "train.lr=1e-3") == 0
    before = digests(out)
    assert SETTINGS_FILE in before and "results.json" in before
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["train"]["threads"] == 1 and results["threads"] == 1  # the counts used, recorded
    capsys.readouterr()
    assert ois_train(out, "train.lr=2e-3") == 2  # other settings: refused, naming the key
    line = last_line(capsys.readouterr().err)
    assert f"output_dir={out} holds a run of other settings (train.lr 0.001 -> 0.002)" in line
    assert ois_train(out, "train.lr=1e-3") == 2  # the same settings without ckpt_path=last would overwrite it
    assert "already holds a run of these settings; ckpt_path=last resumes it" in last_line(capsys.readouterr().err)
    assert digests(out) == before

    assert ois_train(out, "train.lr=2e-3", "restart=true") == 0
    [aside] = (tmp_path / ASIDE_DIR).iterdir()
    assert aside.name.startswith("run-") and digests(aside) == before  # moved, byte for byte
    assert collect(tmp_path)[0][0].settings["train.lr"] == 2e-3  # `ois table` reads the new run only
    assert len(collect(tmp_path)[0]) == 1


def test_eval_of_a_run_never_touches_its_files(tmp_path):
    out = tmp_path / "run"
    assert ois_train(out) == 0
    before = digests(out)
    ckpt = out / "checkpoints" / "last.ckpt"
    assert main(["eval", "--ckpt", str(ckpt), "logger.kind=none", "eval.max_objects=1"]) == 0
    assert digests(out, skip=("eval",)) == before
    cfg = load_config(TINY_YAML, [*RUN, f"ckpt={ckpt}", "logger.kind=none", "eval.max_objects=1"])
    written = eval_dir(cfg) / "results.json"
    assert written.parent.parent == out / "eval" and written.is_file()
    assert main(["eval", "--ckpt", str(ckpt), "logger.kind=none", f"output_dir={out}"]) == 2  # refused
    assert digests(out, skip=("eval",)) == before
    assert [r.path for r in collect(tmp_path)[0]] == [out / "results.json"]  # the evaluation is not a run


def test_a_preempted_offline_wandb_run_resumes_with_its_id_and_steps(tmp_path):
    """Offline (the normal case on cluster nodes) W&B writes a second run folder on resume; both carry the run's
    id and W&B's step continues from the checkpoint's step, so `wandb sync --id` of both gives one history."""
    out, wandb = tmp_path / "run", ["logger.kind=wandb", "train.log_every_n_steps=1"]
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}  # as from a shell: no shared service
    env["WANDB_MODE"] = "offline"
    proc = run_warm([sys.executable, "-c", SELF_TERMINATED, "1", "train", TINY_YAML, *RUN, *wandb,
                     f"output_dir={out}"], env)
    assert proc.returncode == 143, proc.stderr[-3000:]
    resumed = run_warm([sys.executable, "-m", "ois_lightning", "train", TINY_YAML, *RUN, *wandb,
                        f"output_dir={out}", "ckpt_path=last"], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run_id = (out / "wandb_run_id").read_text()
    folders = sorted((out / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(f.name.split("-")[-1] == run_id or f.name.endswith(f"-{run_id}-1")
                                     for f in folders)
    files = [next(f.glob("run-*.wandb")) for f in folders]
    ids = {r.run.run_id for f in files for r in wandb_records(f) if r.WhichOneof("record_type") == "run"}
    assert ids == {run_id}
    first, second = (wandb_steps(f) for f in files)
    assert first and second and max(first) <= 2 <= min(second) and max(second) == 4, (first, second)


@pytest.mark.parametrize("table,row,expected", [("table4", "full", "runs/table4/full/seed3"),
                                                (None, None, "runs/tiny/seed3")])
def test_default_output_dir_is_the_table_layout(table, row, expected):
    extra = [f"table={table}", f"row={row}"] if table else []
    assert load_config(TINY_YAML, ["seed=3", *extra]).output_dir == expected

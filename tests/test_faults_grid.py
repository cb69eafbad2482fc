"""Fault injection on the ablation grid: a killed runner, two runs on one folder, stale locks, changed
settings, failed points, mixed or missing table rows, group-readable results, GPUs shared out to points."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ois_lightning.utils.atomic import current_umask
from ois_lightning.cli import main
from ois_lightning.config.load import load_config
from ois_lightning.protocol.evaluate import EvalResult
from ois_lightning.protocol.report import write_results
from ois_lightning.grids.table_spec import load_table_spec
from ois_lightning.utils.lock import LOCK_FILE, LockError, locks_output_dir, output_dir_lock
from ois_lightning.protocol.results import ResultsError, read_results, settings_fingerprint
from ois_lightning.grids.local_runner import gpu_slots, run_local
from ois_lightning.grids.table import build_table
from ois_lightning.protocol.results import collect

from .helpers import REPO, TABLE4, curve, run_warm, write_run, write_sweep

pytestmark = pytest.mark.usefixtures("random_weights")  # Table 4's rows name a published backbone

# A point that never finishes: records the pids of its supervisor, itself and a child it starts, then sleeps.
SLEEPER = """
import os, pathlib, subprocess, sys, time
out = pathlib.Path(dict(a.split("=", 1) for a in sys.argv[2:])["output_dir"])
kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
(out / "pids").write_text(f"{os.getppid()} {os.getpid()} {kid.pid}")
time.sleep(300)
"""


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_kill_9_of_the_runner_leaves_no_orphan(tmp_path: Path):
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    sweep = write_sweep(tmp_path, ["${env}", "${interpreter}", str(script), "train", "${args_no_hyphens}"])
    runs = tmp_path / "runs"
    runner = subprocess.Popen([sys.executable, "-m", "ois_lightning", "sweep", str(sweep), "--local", "--parallel",
                               "2", "--runs-dir", str(runs)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
    pids: list[int] = []
    try:
        assert wait_for(lambda: len(list(runs.rglob("pids"))) == 2, 60), runner.stdout
        pids += [int(p) for f in runs.rglob("pids") for p in f.read_text().split()]
        assert len(pids) == 6 and all(alive(p) for p in pids)
        runner.kill()  # SIGKILL: no handler of the runner runs
        runner.wait()
        assert wait_for(lambda: not any(alive(p) for p in pids), 5), [p for p in pids if alive(p)]
    finally:
        runner.kill()
        for pid in filter(alive, pids):  # what a failure left behind
            os.kill(pid, signal.SIGKILL)


def test_second_ois_train_or_eval_on_one_output_dir_fails_at_once_with_one_line(tmp_path: Path):
    from ois_lightning.protocol.eval_run import evaluate_checkpoint

    out = tmp_path / "run"
    cfg = load_config(REPO / "experiments/tiny.yaml", [f"output_dir={out}", "logger.kind=none",
                                                       "model.backbone.random_init=true"])  # eval without ckpt
    with output_dir_lock(out, "ois train"):
        proc = run_warm([sys.executable, "-m", "ois_lightning", "train", "experiments/tiny.yaml",
                         f"output_dir={out}", "logger.kind=none"], dict(os.environ, WANDB_MODE="offline"), timeout=120)
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert proc.stderr.count("\n") == 1
        assert f"ois: output_dir in use: {out} is in use by pid {os.getpid()} on host {socket.gethostname()}" \
            in proc.stderr
        with pytest.raises(LockError, match="in use by"):  # `ois eval`, in this process: the lock is per open file
            evaluate_checkpoint(cfg)
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (out / LOCK_FILE).exists()


def test_stale_lock_taken_over_other_hosts_refused_and_ddp_workers_not_locked(tmp_path: Path, capsys,
                                                                              monkeypatch):
    lock = tmp_path / LOCK_FILE
    pid = dead_pid()
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "command": "ois train",
                                "started": "2026-01-01T00:00:00Z"}))
    with output_dir_lock(tmp_path, "ois train"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"taking over the stale lock {lock} of pid {pid}" in err
    lock.write_text(json.dumps({"pid": 4242, "host": "gpu-node-7", "command": "ois train", "started": "x"}))
    with pytest.raises(LockError, match=f"locked by pid 4242 on host gpu-node-7 .*; if that run is gone, delete {lock}"):
        with output_dir_lock(tmp_path, "ois train"):
            pass

    @locks_output_dir("ois train")
    def work(cfg) -> str:
        return "ran"

    cfg = load_config(REPO / "experiments/tiny.yaml", [f"output_dir={tmp_path}"])
    with pytest.raises(LockError):
        work(cfg)
    monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP worker of the run that holds the lock
    assert work(cfg) == "ran"


def test_changed_settings_rerun_the_point_from_scratch_saying_which_keys(fake, tmp_path: Path):
    sweep, called = fake
    runs, lines = tmp_path / "runs", []
    assert run_local(sweep, ["train.max_steps=12"], parallel=2, runs_dir=runs, out=lines.append) == 0
    (runs / "tiny4/full/seed0/checkpoints").mkdir()
    (runs / "tiny4/full/seed0/checkpoints/last.ckpt").write_bytes(b"x")
    lines.clear()
    assert run_local(sweep, ["train.max_steps=80"], parallel=2, runs_dir=runs, out=lines.append) == 0
    reruns = [ln for ln in lines if ": rerun: settings changed" in ln]
    assert len(reruns) == 4 and all(ln.endswith("train.max_steps 12 -> 80") for ln in reruns), lines
    assert len(called()) == 8 and not any("ckpt_path=last" in c for c in called())  # old last.ckpt not resumed
    moved = [ln for ln in lines if "running (from scratch: the run there moved to " in ln]
    assert len(moved) == 4, lines
    aside = list((runs / "tiny4/full/.replaced").iterdir())
    assert sorted(p.name.split("-")[0] for p in aside) == ["seed0", "seed1"]
    assert all((p / "results.json").is_file() for p in aside)  # the old runs are kept, not deleted
    lines.clear()
    assert run_local(sweep, ["train.max_steps=80"], runs_dir=runs, out=lines.append) == 0
    assert len(called()) == 8 and sum("finished, skipping" in ln for ln in lines) == 4


def test_a_point_preempted_after_a_settings_change_resumes_its_own_checkpoint(fake, tmp_path: Path, monkeypatch):
    """After a change of settings the old run is moved aside once; the new run's own last.ckpt is then resumed on
    every rerun (it used to restart from step 0 each time, blaming the old settings)."""
    sweep, called = fake
    runs, lines = tmp_path / "runs", []
    assert run_local(sweep, ["train.max_steps=12"], parallel=2, runs_dir=runs, out=lines.append) == 0
    monkeypatch.setenv("FAKE_PREEMPT", "full/seed0")
    assert run_local(sweep, ["train.max_steps=80"], parallel=2, runs_dir=runs, out=lines.append) == 1
    monkeypatch.delenv("FAKE_PREEMPT")
    lines.clear()
    assert run_local(sweep, ["train.max_steps=80"], runs_dir=runs, out=lines.append) == 0
    assert any("full seed0: running (resuming from last.ckpt)" in ln for ln in lines), lines
    assert called()[-1][-1] == "ckpt_path=last" and len(list((runs / "tiny4/full/.replaced").iterdir())) == 2


def test_failed_point_with_results_is_failed_now_and_rerun_later(fake, tmp_path: Path, monkeypatch):
    sweep, called = fake
    runs, lines = tmp_path / "runs", []
    monkeypatch.setenv("FAKE_FAIL_AFTER", "wo_order/seed0")  # writes a valid results.json, then exits 1
    assert run_local(sweep, [], parallel=2, runs_dir=runs, out=lines.append) == 1
    assert "3/4 points finished, 1 failed: wo_order seed0" in lines[-1]
    monkeypatch.delenv("FAKE_FAIL_AFTER")
    lines.clear()
    assert run_local(sweep, [], runs_dir=runs, out=lines.append) == 0
    assert "[3/4] wo_order seed0: rerun: its last run failed (exit code 1)" in lines and len(called()) == 5


def test_table_refuses_mixed_fingerprints_unless_allowed(tmp_path: Path, capsys):
    ids = {"a": curve(2), "b": curve(3)}
    old = write_run(tmp_path, "full", 0, ids, config={"train": {"max_steps": 12}})
    new = write_run(tmp_path, "full", 1, ids, config={"train": {"max_steps": 80}})
    write_run(tmp_path, "wo_order", 0, ids, config={"train": {"max_steps": 80}})
    with pytest.raises(ResultsError, match=r"row 'full' mixes runs of 2 different settings .*: train.max_steps "
                                           r"12 -> 80; rerun the stale points"):
        build_table(load_table_spec(TABLE4), collect(tmp_path)[0], n_boot=50)
    assert main(["table", str(tmp_path), "--no-wandb", "--n-boot", "50", "--allow-partial"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(old) in err and str(new) in err and "--allow-mixed" in err
    assert main(["table", str(tmp_path), "--no-wandb", "--n-boot", "50", "--allow-partial", "--allow-mixed"]) == 0


def test_table_with_a_missing_reference_row_exits_non_zero_naming_it(tmp_path: Path, capsys):
    write_run(tmp_path, "wo_order", 0, {"a": curve(3)})
    assert main(["table", str(tmp_path), "--no-wandb", "--n-boot", "50"]) == 2
    err = capsys.readouterr().err
    assert "no results for row(s) full (reference), wo_object, wo_sparse, wo_dense of table4" in err
    assert "--allow-partial" in err and not (tmp_path / "table.md").exists()
    assert main(["table", str(tmp_path), "--no-wandb", "--n-boot", "50", "--allow-partial"]) == 0
    assert "partial table: no results for row(s) full (reference)" in capsys.readouterr().out


def test_results_are_group_readable_and_record_their_fingerprint(tmp_path: Path):
    cfg = load_config(REPO / "experiments/tiny.yaml", [f"output_dir={tmp_path}"])
    result = EvalResult(["a#0"], [[0.5] * 20], {"NoC90": 20.0})
    previous = os.umask(0o002)
    try:
        assert current_umask() == 0o002
        path = write_results(result, tmp_path, cfg, "layered")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o664
    assert (tmp_path / "miou_vs_clicks.png").stat().st_mode & 0o777 == 0o664
    recorded = json.loads(path.read_text())["fingerprint"]
    assert recorded == settings_fingerprint(cfg) == read_results(path).fingerprint
    moved = load_config(REPO / "experiments/tiny.yaml", ["output_dir=elsewhere", "data.num_workers=7", "seed=3",
                                                         "data.root=/mnt/other", "logger.kind=csv"])
    assert settings_fingerprint(moved) == recorded  # places, workers, logging and the seed are not settings
    assert settings_fingerprint(load_config(REPO / "experiments/tiny.yaml", ["train.lr=1e-3"])) != recorded


def test_gpus_give_running_points_distinct_devices(fake, tmp_path: Path, monkeypatch, capsys):
    sweep, _ = fake
    runs = tmp_path / "runs"
    assert main(["sweep", str(sweep), "--local", "--parallel", "2", "--gpus", "0,1", "--runs-dir", str(runs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    running = [ln for ln in lines if ": running" in ln]
    assert "CUDA_VISIBLE_DEVICES=0" in running[0] and "CUDA_VISIBLE_DEVICES=1" in running[1]
    # replayed in the runner's order: a point starts on a device no running point holds, and its process sees
    # that device (which device a later point gets depends on which earlier one ends first)
    held: dict[str, str] = {}
    for line in lines:
        label = line.split("] ", 1)[-1].split(": ", 1)[0]
        if ": running" in line:
            device = line.split("CUDA_VISIBLE_DEVICES=", 1)[1].split(",", 1)[0]
            assert device not in held.values(), (line, held)
            held[label] = device
            env_json = Path(line.rsplit(", log ", 1)[1]).parent / "env.json"
            assert json.loads(env_json.read_text())["CUDA_VISIBLE_DEVICES"] == device
        elif ": done in" in line:
            held.pop(label)
    assert len(running) == 4 and not held
    assert gpu_slots(["0", "1", "2", "3"], 2) == ["0,1", "2,3"] and gpu_slots(["0"], 2) == ["0"]
    if torch.cuda.is_available():
        return
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # no GPU here: nothing is set for the points
    assert run_local(sweep, [], parallel=2, runs_dir=tmp_path / "cpu", out=lambda line: None) == 0
    assert {json.loads(p.read_text())["CUDA_VISIBLE_DEVICES"] for p in (tmp_path / "cpu").rglob("env.json")} == {None}


def test_point_locked_by_a_live_run_is_left_to_it(fake, tmp_path: Path):
    sweep, called = fake
    runs, lines = tmp_path / "runs", []
    with output_dir_lock(runs / "tiny4/wo_order/seed1", "ois train"):  # e.g. a W&B agent training that point
        assert run_local(sweep, [], parallel=2, runs_dir=runs, out=lines.append) == 1
    assert f"[4/4] wo_order seed1: in use by pid {os.getpid()} on host {socket.gethostname()}" in "\n".join(lines)
    assert "3/4 points finished, 1 in use by other runs: wo_order seed1" in lines[-1] and len(called()) == 3
    assert run_local(sweep, [], runs_dir=runs, out=lines.append) == 0 and len(called()) == 4

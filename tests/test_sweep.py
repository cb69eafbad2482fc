"""`ois sweep --local`: grid expansion, per-point subprocesses, skip/redo on re-run, then `ois table`."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ois_lightning.cli import main
from ois_lightning.grids.commands import normalize_sweep_argv
from ois_lightning.config.load import load_config
from ois_lightning.grids.sweep_file import load_sweep
from ois_lightning.grids.local_runner import plan, run_local

from .helpers import REPO, TINY_RUN, run_warm, write_sweep

pytestmark = pytest.mark.usefixtures("random_weights")  # Table 4's rows name a published backbone


def test_plan_matches_the_wandb_agent_argv(monkeypatch, tmp_path: Path):
    monkeypatch.chdir(REPO)
    jobs = plan(load_sweep("sweeps/table4.yaml"), tmp_path / "runs", ["train.max_steps=3"], python="PY")
    assert len(jobs) == 15
    first = jobs[0]
    assert first.argv == ["PY", "-m", "ois_lightning", "train", "config=experiments/table4/full.yaml", "seed=0",
                          "output_dir=runs/${table}/${row}/seed${seed}", "train.max_steps=3",
                          f"output_dir={tmp_path}/runs/table4/full/seed0"]
    assert {(j.row, j.point.seed) for j in jobs} == {(r, s) for r in ("full", "wo_order", "wo_object", "wo_sparse",
                                                                      "wo_dense") for s in (0, 1, 2)}
    for job in jobs:  # what `ois train` makes of that argv: the row config, the seed, our output_dir
        argv = normalize_sweep_argv(job.argv[3:])
        cfg = load_config(argv[1], argv[2:])
        assert (cfg.row, cfg.seed, cfg.train.max_steps) == (job.row, job.point.seed, 3)
        assert Path(cfg.output_dir) == job.output_dir == tmp_path / "runs/table4" / job.row / f"seed{job.point.seed}"
        assert job.results == [job.output_dir / "results.json"]  # Table 4 tests on DAVIS alone
    two = plan(load_sweep("sweeps/table4.yaml"), tmp_path / "runs", ["data.test=[davis,grabcut]"], python="PY")[0]
    assert two.results == [two.output_dir / "davis" / "results.json", two.output_dir / "grabcut" / "results.json"]


def test_runs_every_point_then_skips_finished_and_redoes_broken(fake, tmp_path: Path):
    sweep, called = fake
    lines: list[str] = []
    assert run_local(sweep, ["train.max_steps=2"], parallel=2, runs_dir=tmp_path / "runs", out=lines.append) == 0
    assert len(called()) == 4 and all(c[-2] == "train.max_steps=2" for c in called())
    for row in ("full", "wo_order"):
        for seed in (0, 1):
            assert (tmp_path / "runs/tiny4" / row / f"seed{seed}" / "results.json").is_file()
    assert sum(": done in" in ln for ln in lines) == 4 and "4/4 points finished" in lines[-1]
    lines.clear()
    assert run_local(sweep, ["train.max_steps=2"], runs_dir=tmp_path / "runs", out=lines.append) == 0
    assert len(called()) == 4 and sum("finished, skipping" in ln for ln in lines) == 4  # nothing re-run
    broken = tmp_path / "runs/tiny4/wo_order/seed1"
    (broken / "results.json").write_text('{"summary": ')  # e.g. a results file from an older, broken writer
    (broken / "checkpoints").mkdir()
    (broken / "checkpoints/last.ckpt").write_bytes(b"x")
    assert run_local(sweep, ["train.max_steps=2"], runs_dir=tmp_path / "runs", out=lines.append) == 0
    assert len(called()) == 5 and str(broken) in called()[-1][-2]
    assert called()[-1][-1] == "ckpt_path=last"  # the broken point resumes its training
    assert any("resuming from last.ckpt" in ln for ln in lines)


def test_failed_point_is_reported_and_the_rest_finish(fake, tmp_path: Path, monkeypatch):
    sweep, called = fake
    monkeypatch.setenv("FAKE_FAIL", "full/seed1")
    lines: list[str] = []
    assert run_local(sweep, [], runs_dir=tmp_path / "runs", out=lines.append) == 1
    failed = [ln for ln in lines if "FAILED" in ln]
    assert len(failed) == 1 and "full seed1" in failed[0] and "exit code 3" in failed[0]
    assert "train.log" in failed[0] and "1 failed: full seed1" in lines[-1]
    monkeypatch.delenv("FAKE_FAIL")
    assert run_local(sweep, [], runs_dir=tmp_path / "runs", out=lines.append) == 0
    assert len(called()) == 5  # only the failed point ran again


def test_sweep_command_errors(tmp_path: Path, capsys):
    path = write_sweep(tmp_path, ["${env}", "${interpreter}", "-m", "ois_lightning", "train", "${args_no_hyphens}"])
    assert main(["sweep", str(path)]) == 2
    assert "only --local runs here" in capsys.readouterr().err
    assert main(["sweep", str(path), "--local", "model.ordr=1"]) == 2
    assert "model.ordr" in capsys.readouterr().err
    assert main(["sweep", str(path), "--local", "output_dir=x"]) == 2
    assert "use --runs-dir" in capsys.readouterr().err
    bad = write_sweep(tmp_path, ["${env}", "${python}", "train", "${args_no_hyphens}"], name="bad")
    assert main(["sweep", str(bad), "--local"]) == 2
    assert "${python} is not supported" in capsys.readouterr().err


def _shell_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}  # as from a shell: no shared service
    env["WANDB_MODE"] = "offline"
    return env


def _ois(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ois_lightning", *args], cwd=REPO, env=_shell_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def _ois_warm(*args: str) -> tuple[int, str]:
    """Exit status and output (stdout, then stderr) of ``python -m ois_lightning ARGS``, started warm."""
    proc = run_warm([sys.executable, "-m", "ois_lightning", *args], _shell_env(), timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow
def test_local_sweep_killed_and_resumed_then_table(tmp_path: Path):
    """2 rows x 2 seeds of real tiny training (`python -m ois_lightning train` per point, W&B offline)."""
    sweep = write_sweep(tmp_path, ["${env}", "${interpreter}", "-m", "ois_lightning", "train", "${args_no_hyphens}"])
    runs = tmp_path / "runs"
    tiny = [o for o in TINY_RUN if not o.startswith(("logger.", "eval.max_objects"))]
    overrides = tiny + ["train.max_steps=2", "train.max_epochs=1", "eval.max_objects=3", "data.layered.test_length=2"]
    first = _ois("sweep", str(sweep), "--local", "--parallel", "2", "--runs-dir", str(runs), *overrides,
                 start_new_session=True)
    done = runs / "tiny4/full/seed0/results.json"
    deadline = time.monotonic() + 900
    while not done.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(1)
    assert done.exists(), first.communicate()[0][-3000:]
    os.killpg(first.pid, signal.SIGTERM)  # the runner and the point it is training now
    out1 = first.communicate(timeout=120)[0]
    assert "interrupted" in out1 and first.returncode == 130, out1[-3000:]
    finished = {p.parent for p in runs.rglob("results.json")}
    assert 1 <= len(finished) < 4
    stamps = {p: (p / "results.json").stat().st_mtime_ns for p in finished}
    for p in finished:
        assert len(list((p / "wandb").glob("offline-run-*"))) == 1  # one W&B offline run per point

    second = _ois("sweep", str(sweep), "--local", "--parallel", "2", "--runs-dir", str(runs), *overrides)
    out2 = second.communicate(timeout=1500)[0]
    assert second.returncode == 0, out2[-3000:]
    assert out2.count("finished, skipping") == len(finished)
    assert out2.count(": running") == 4 - len(finished)
    assert {p: (p / "results.json").stat().st_mtime_ns for p in finished} == stamps  # not redone
    assert len(list(runs.rglob("results.json"))) == 4

    # an evaluation of a finished point writes beside it (<run>/eval/...) and the next rerun still skips every point
    run = runs / "tiny4/full/seed0"
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, log = _ois_warm("eval", "--ckpt", str(run / "checkpoints/last.ckpt"), "logger.kind=none")
    assert code == 0, log[-3000:]
    assert all(p.read_bytes() == data for p, data in files.items()) and list((run / "eval").glob("*/results.json"))
    code, out3 = _ois_warm("sweep", str(sweep), "--local", "--runs-dir", str(runs), *overrides)
    assert code == 0 and out3.count("finished, skipping") == 4, out3[-3000:]

    code, out4 = _ois_warm("table", str(runs / "tiny4"), "--table", "experiments/table4/table.yaml", "--paper",
                           "--allow-partial")  # two of the five rows
    assert code == 0, out4
    md = (runs / "tiny4/table.md").read_text()
    assert md in out4
    wo_order = next(ln for ln in md.splitlines() if ln.startswith("| w/o order"))
    assert " ± " in wo_order and " [" in wo_order and "4.84 (+1.04)" in wo_order  # ours ± std, Δ [CI], paper
    rows = (runs / "tiny4/table.csv").read_text().splitlines()
    assert rows[1].startswith("full,") and rows[2].startswith("wo_order,")


def test_slurm_shim_runs_the_agents_command_under_srun_with_the_ddp_layout(tmp_path: Path):
    """sweeps/slurm/bin/python (put on PATH by agent.sbatch) with a stand-in `srun` that drops its options."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text('#!/bin/sh\necho "srun $*" > "$SRUN_LOG"\n'
                                   'while [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n')
    (fake_bin / "srun").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake_bin}:{os.environ['PATH']}", OIS_PYTHON=sys.executable,
               SLURM_NTASKS_PER_NODE="4", SLURM_JOB_NUM_NODES="2", SRUN_LOG=str(tmp_path / "srun.log"))
    shim = REPO / "sweeps/slurm/bin/python"
    proc = subprocess.run([str(shim), "-m", "ois_lightning", "print-config", "seed=1",
                           "config=experiments/table4/full.yaml"], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    train = yaml.safe_load(proc.stdout)["train"]
    assert (train["devices"], train["num_nodes"], train["strategy"], train["accelerator"]) == (4, 2, "ddp", "gpu")
    assert (tmp_path / "srun.log").read_text().startswith(f"srun --kill-on-bad-exit=1 --export=ALL {sys.executable}")
    sbatch = (REPO / "sweeps/slurm/agent.sbatch").read_text()
    assert "wandb agent --count 1" in sbatch and 'PATH="$PWD/sweeps/slurm/bin:$PATH"' in sbatch
    assert subprocess.run(["bash", "-n", str(REPO / "sweeps/slurm/agent.sbatch")]).returncode == 0


def test_local_runner_through_the_slurm_launcher(fake, tmp_path: Path, monkeypatch, capsys):
    """``ois sweep --local --python sweeps/slurm/bin/python``: each point is one srun step with the DDP layout."""
    sweep, called = fake
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text('#!/bin/sh\necho "srun $*" >> "$SRUN_LOG"\n'
                                   'while [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n')
    (fake_bin / "srun").chmod(0o755)
    for key, value in {"PATH": f"{fake_bin}:{os.environ['PATH']}", "OIS_PYTHON": sys.executable,
                       "SLURM_NTASKS_PER_NODE": "4", "SLURM_JOB_NUM_NODES": "2",
                       "SRUN_LOG": str(tmp_path / "srun.log")}.items():
        monkeypatch.setenv(key, value)
    argv = ["sweep", str(sweep), "--local", "--python", str(REPO / "sweeps/slurm/bin/python"),
            "--runs-dir", str(tmp_path / "runs")]
    assert main(argv) == 0
    assert len(called()) == 4 and all(c[-3:] == ["train.strategy=ddp", "train.devices=4", "train.num_nodes=2"]
                                      for c in called())
    assert len((tmp_path / "srun.log").read_text().splitlines()) == 4
    capsys.readouterr()
    assert main([*argv[:4], str(tmp_path / "no_such_python"), *argv[5:]]) == 2
    assert "--python" in (err := capsys.readouterr().err) and "not an executable file" in err

"""Fault injection for `ois train`: a run killed (kill -9) after a mid-epoch checkpoint resumes to the weights and
per-step losses of an uninterrupted run under both lr schedules; a torn last.ckpt, a full disk during a
checkpoint save, an unwritable output_dir, a NaN loss and a run with nothing to train end in one clear line with
nothing lost and no results.json; SIGTERM checkpoints the batch, exits 143 and resumes exactly."""
from __future__ import annotations

import csv
import errno
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ois_lightning.cli import main
from ois_lightning.config.load import load_config
from ois_lightning.lit.datamodule import OISDataModule
from ois_lightning.lit.guards import TrainingError
from ois_lightning.lit.train import train
from ois_lightning.utils.warm_start import popen

from .helpers import QUICK, REPO, SELF_TERMINATED, STALLED_TRAIN, TINY_YAML, global_step, run_warm


# 16 scenes of batch 2: 8 steps per epoch; 4 steps with a checkpoint (and validation) every 2: mid-epoch throughout.
RUN = (*QUICK, "data.layered.train_length=16", "train.max_steps=4", "train.val_every_n_steps=2", "seed=4")


def ois_train(out: Path, *extra: str) -> int:
    return main(["train", TINY_YAML, *RUN, f"output_dir={out}", *extra])


def kill_after_checkpoint(out: Path, step: int, *extra: str) -> None:
    """Run `ois train` in a subprocess, wait until last.ckpt holds global step ``step``, then SIGKILL it."""
    log = out.parent / f"{out.name}.log"
    out.mkdir(parents=True)
    log.write_text("")
    proc = popen([sys.executable, "-c", STALLED_TRAIN, str(step), "train", TINY_YAML, *RUN, f"output_dir={out}",
                  *extra], log=log, cwd=REPO)
    last, deadline = out / "checkpoints" / "last.ckpt", time.monotonic() + 120
    try:
        while not (last.is_file() and global_step(last) == step):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def losses(out: Path) -> dict[int, str]:
    """train/loss per step of the newest CSV log in ``out`` (as written: exact float repr)."""
    version = max((out / "csv").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    rows = csv.DictReader(open(version / "metrics.csv"))
    return {int(r["step"]): r["train/loss"] for r in rows if r.get("train/loss")}


def weights(out: Path) -> dict:
    return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_kill_9_after_mid_epoch_checkpoint_resumes_exactly(tmp_path, schedule):
    """Killed at step 2 of 8 in the epoch, resumed with ckpt_path=last: every weight tensor and the loss of every
    step after the checkpoint equal those of an uninterrupted run (cosine read the step budget from a loader
    built before the resume, which then restarted the epoch at its first batch)."""
    lr = f"train.lr_schedule={schedule}"
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert ois_train(whole, lr) == 0
    kill_after_checkpoint(killed, 2, lr)
    assert not (killed / "results.json").exists()
    assert ois_train(killed, lr, "ckpt_path=last") == 0
    a, b = weights(whole), weights(killed)
    assert a["global_step"] == b["global_step"] == 4 and a["epoch"] == b["epoch"] == 0
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    resumed, reference = losses(killed), losses(whole)
    assert sorted(resumed) == sorted(reference)[2:] and len(resumed) == 2
    assert resumed == {step: reference[step] for step in resumed}


def test_sigterm_checkpoints_exits_143_and_resumes_exactly(tmp_path):
    """SIGTERM during step 2 (checkpoints every 3 steps): last.ckpt of step 2 is written, exit code 143, no
    results.json; ckpt_path=last then gives the weights of an uninterrupted run."""
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert ois_train(whole, "train.val_every_n_steps=3") == 0
    proc = run_warm([sys.executable, "-c", SELF_TERMINATED, "1", "train", TINY_YAML, *RUN,
                     "train.val_every_n_steps=3", f"output_dir={stopped}"])
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert "ois: preempted: stopped by SIGTERM at step 2;" in proc.stderr and "ckpt_path=last" in proc.stderr
    assert global_step(stopped / "checkpoints" / "last.ckpt") == 2 and not (stopped / "results.json").exists()
    assert ois_train(stopped, "train.val_every_n_steps=3", "ckpt_path=last") == 0
    a, b = (torch.load(p / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
            for p in (whole, stopped))
    assert a["global_step"] == b["global_step"] == 4
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_torn_last_ckpt_resumes_from_newest_readable_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert ois_train(out) == 0
    folder = out / "checkpoints"
    last, valid = folder / "last.ckpt", folder / "epoch=0-step=4.ckpt"
    assert global_step(valid) == 4
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # torn by a crash mid-write
    older = folder / "older.ckpt"  # readable, but not the newest
    older.write_bytes(valid.read_bytes())
    os.utime(older, (valid.stat().st_mtime - 3600,) * 2)
    stale = folder / ".last.ckpt.x1y2.tmp"  # left by a process killed while writing
    stale.write_bytes(b"partial")
    capsys.readouterr()
    assert ois_train(out, "train.max_steps=6", "ckpt_path=last") == 0
    assert not stale.exists()
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "last.ckpt is unreadable" in warning[0] and valid.name in warning[0]
    assert global_step(last) == 6 and (out / "results.json").is_file()

    assert (folder / "last.ckpt.torn").is_file()  # kept, not deleted

    # training already complete: no step saves a new last.ckpt, so the resume itself must leave a whole one
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    assert ois_train(out, "train.max_steps=6", "ckpt_path=last") == 0
    assert global_step(last) == 6 and len(list(folder.glob("last.ckpt.torn"))) == 1
    capsys.readouterr()

    alone = tmp_path / "alone" / "checkpoints"
    alone.mkdir(parents=True)
    (alone / "last.ckpt").write_bytes(b"PK\x03\x04 torn")
    assert ois_train(alone.parent, "ckpt_path=last") == 2
    assert "no other readable checkpoint" in one_line(capsys.readouterr().err)


def test_full_disk_during_last_ckpt_save_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    """The disk fills half-way through writing last.ckpt at step 4 (the 4th file written: epoch=0-step=2.ckpt,
    last.ckpt, epoch=0-step=4.ckpt, last.ckpt): one line, last.ckpt still holds step 2, no temporary file is
    left and no results.json is written."""
    save, saves = torch.save, []

    def save_until_full(obj, f, *args, **kwargs):  # noqa: ANN001
        if not hasattr(f, "fileno"):  # an in-memory buffer
            return save(obj, f, *args, **kwargs)
        saves.append(f)
        if len(saves) < 4:
            return save(obj, f, *args, **kwargs)
        data = io.BytesIO()
        save(obj, data)
        f.write(data.getvalue()[: len(data.getvalue()) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", save_until_full)
    out = tmp_path / "run"
    capsys.readouterr()
    assert ois_train(out) == 2
    line = one_line(capsys.readouterr().err)
    assert "last.ckpt" in line and "No space left on device" in line
    folder = out / "checkpoints"
    assert len(saves) == 4 and global_step(folder / "last.ckpt") == 2
    assert sorted(p.name for p in folder.iterdir()) == ["epoch=0-step=4.ckpt", "last.ckpt"]
    assert not (out / "results.json").exists()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 1 MiB file system (tmpfs, mounted as root; skipped where mounting is not allowed)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_a_real_full_disk_is_one_line_and_keeps_the_previous_checkpoint(small_tmpfs):
    """torch.save reports a failed write on a full file system as a RuntimeError (not an OSError): the save is
    still one TrainingError naming the file and the free space, and the previous file stays whole."""
    from ois_lightning.lit.checkpointing import AtomicCheckpointIO, readable

    target, io_ = small_tmpfs / "last.ckpt", AtomicCheckpointIO()
    io_.save_checkpoint({"step": 2, "w": torch.zeros(10)}, target)
    with pytest.raises(TrainingError) as e:
        io_.save_checkpoint({"step": 4, "w": torch.zeros(1_000_000)}, target)  # 4 MB into 1 MiB
    assert "\n" not in str(e.value) and str(target) in str(e.value) and "MiB free there" in str(e.value)
    assert [p.name for p in small_tmpfs.iterdir()] == ["last.ckpt"] and readable(target)
    assert torch.load(target, weights_only=True)["step"] == 2


def test_unwritable_output_dir_fails_before_the_first_step(tmp_path, capsys):
    """Unwritable even as root: an output_dir under a regular file, a regular file where checkpoints/ goes;
    when chmod binds (not root), a read-only output_dir. Each is one line naming the folder, before any step."""
    (tmp_path / "file").write_text("")
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "checkpoints").write_text("")
    read_only = tmp_path / "ro"
    read_only.mkdir(mode=0o555)
    targets = [tmp_path / "file" / "sub", blocked] + ([read_only] if not os.access(read_only, os.W_OK) else [])
    try:
        for out in targets:
            capsys.readouterr()
            assert ois_train(out) == 2
            assert str(out) in one_line(capsys.readouterr().err)
    finally:
        read_only.chmod(0o755)
    assert not any(read_only.iterdir()) and not (blocked / "csv").exists()


def test_nan_loss_stops_with_the_step(tmp_path, capsys):
    out = tmp_path / "run"
    capsys.readouterr()
    assert ois_train(out, "train.lr=1e6") == 2
    line = one_line(capsys.readouterr().err)
    assert "train/loss is nan at step 1" in line and "train.lr" in line
    assert not (out / "results.json").exists() and not list((out / "checkpoints").glob("*.ckpt"))


@pytest.mark.parametrize("override,named", [("train.max_epochs=0", "train.max_epochs"),
                                             ("train.max_steps=0", "train.max_steps"),
                                             ("data.layered.train_length=1", "No training batches")])
def test_nothing_to_train_is_an_error(tmp_path, capsys, override, named):
    """No step to make (a zero limit, fewer samples than a batch): one line, no checkpoint, no results.json."""
    out = tmp_path / "run"
    capsys.readouterr()
    assert ois_train(out, override) == 2
    assert named in one_line(capsys.readouterr().err)
    assert not (out / "results.json").exists() and not list((out / "checkpoints").glob("*.ckpt"))


def test_guard_refuses_zero_limits_and_zero_steps(tmp_path, monkeypatch):
    """Past the config checks: a zero limit set on the config object, and a fit that ends at step 0 (the
    loader yields nothing although the batch count said otherwise) are TrainingErrors."""
    cfg = load_config(TINY_YAML, [*RUN, f"output_dir={tmp_path}"])
    cfg.train.max_epochs = 0
    with pytest.raises(TrainingError, match="train.max_epochs=0: nothing to train"):
        train(cfg)
    cfg = load_config(TINY_YAML, [*RUN, f"output_dir={tmp_path}", "data.layered.train_length=1"])
    monkeypatch.setattr(OISDataModule, "steps_per_epoch", lambda self: 1)
    with pytest.raises(TrainingError, match="0 optimizer steps"):
        train(cfg)
    assert not (tmp_path / "results.json").exists()

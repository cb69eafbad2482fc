"""Checkpoints that survive kills and full disks: :class:`AtomicCheckpointIO` writes every checkpoint (last.ckpt
too) to a temporary file in its own folder, fsyncs and renames it into place; :func:`resume_path` falls back from
an unreadable last.ckpt to the newest readable checkpoint; :func:`prepare_checkpoint_dir` checks before the
first step that the checkpoints can be written."""
from __future__ import annotations

import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from ..protocol.results import LAST, checkpoint_dir
from ..utils.atomic import atomic_write
from .guards import TrainingError

TORN = f"{LAST}.torn"  # an unreadable last.ckpt, kept when a resume falls back to an older checkpoint
STALE = ".*.ckpt.*.tmp"  # temporary files of atomic_write left by a process killed while writing


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file beside the target, fsync, ``os.replace``, fsync of the folder: a kill
    or a full disk leaves the previous file whole (Lightning's own save moves a temporary file from elsewhere).
    A failed write is a :class:`TrainingError` naming the file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")

        def write(f: IO[bytes]) -> None:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())

        path = Path(path)
        try:
            atomic_write(path, write, mode="wb")
            _fsync_dir(path.parent)
        except (OSError, RuntimeError) as e:  # torch.save reports a failed write (a full disk) as RuntimeError
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[0]
            free = shutil.disk_usage(path.parent).free
            raise TrainingError(f"checkpoint {path}: cannot write it ({reason}; {free / 2**20:.1f} MiB free there); "
                                "the file there is left as it was") from e


def readable(path: Path) -> bool:
    """True if ``path`` loads as a checkpoint (memory-mapped: a truncated file fails on its missing index)."""
    try:
        torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError):
        return False
    return True


def resume_path(folder: Path) -> Path:
    """``folder/last.ckpt`` or, when it is unreadable (torn), the newest readable other checkpoint in ``folder``
    with a one-line warning; a :class:`TrainingError` when there is none. The torn file is kept as
    ``last.ckpt.torn`` and last.ckpt becomes a copy of the fallback, so a run that was already complete (no step
    left to save a new last.ckpt) does not end with the torn file where the docs send users."""
    last = folder / LAST
    if readable(last):
        return last
    others = sorted((p for p in folder.glob("*.ckpt") if p.name != LAST), key=lambda p: p.stat().st_mtime,
                    reverse=True)
    fallback = next((p for p in others if readable(p)), None)
    if fallback is None:
        raise TrainingError(f"ckpt_path=last: {last} is unreadable (truncated?) and {folder} holds no other "
                            "readable checkpoint")
    if rank_zero_only.rank == 0:
        os.replace(last, last.with_name(TORN))
        with open(fallback, "rb") as src:
            atomic_write(last, lambda dst: shutil.copyfileobj(src, dst), mode="wb")
        print(f"ois: warning: ckpt_path=last: {last} is unreadable (truncated?); resuming from {fallback} "
              f"(copied to {LAST}; the unreadable file kept as {TORN})", file=sys.stderr)
    return fallback


def prepare_checkpoint_dir(output_dir: str | Path) -> None:
    """Create the checkpoint folder and write a probe file there, so an unwritable ``output_dir`` fails before
    the first step with one line naming it; removes temporary files of writes a kill interrupted."""
    folder = checkpoint_dir(output_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise TrainingError(f"output_dir={output_dir}: cannot write checkpoints to {folder} "
                            f"({e.strerror or e})") from None
    for stale in folder.glob(STALE):
        stale.unlink(missing_ok=True)

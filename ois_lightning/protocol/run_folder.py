"""A run folder belongs to one set of settings: ``<output_dir>/settings.json``.

``ois train`` records there the settings that change a run's numbers (:func:`result_settings`) before its first
step. A later ``ois train`` in the same folder is refused with one line when the settings differ (naming the
keys; a resume, ``ckpt_path=last``, may only lengthen the run: :data:`EXTENDABLE`), or when the folder already
holds a run of the same settings that it would overwrite without ``ckpt_path=last``; ``restart=true`` moves the
old run aside (:func:`move_aside`, never deleted) and starts over.
Folders written before settings.json existed are judged by the settings their results.json records.

An evaluation never writes into a training run: ``ois eval`` without ``output_dir=`` writes to
:func:`eval_dir` (``<run>/eval/<datasets>-<settings hash>``), and :func:`refuse_training_run` stops one given a
training run's folder.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from ..config.schema import ConfigError
from ..utils.atomic import atomic_write
from .results import (EVAL_DIR, LAST, ResultsError, checkpoint_dir, describe_changes, read_results,
                      result_settings, settings_fingerprint)

SETTINGS_FILE = "settings.json"
ASIDE_DIR = ".replaced"  # beside a run folder: the runs restart=true moved aside
EXTENDABLE = ("train.max_steps", "train.max_epochs")  # may change on a resume: the same run, trained further
KEEP = ("ois.lock",)  # held by the running command: stays in place when a run is moved aside


class RunFolderError(ConfigError):
    """The output folder holds another run (one-line message naming the folder and what differs)."""


def stored_settings(output_dir: str | Path) -> Optional[dict[str, Any]]:
    """The settings of the run in ``output_dir``: its settings.json, else those of the first readable
    results.json directly in it or one folder down (older runs); None for a folder without a run."""
    folder = Path(output_dir)
    path = folder / SETTINGS_FILE
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            return dict(data["settings"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RunFolderError(f"{path}: unreadable ({e}); move the folder aside or delete that file") from None
    for results in [folder / "results.json", *sorted(folder.glob("*/results.json"))]:
        if results.is_file():
            try:
                return read_results(results).settings
            except ResultsError:
                continue
    return None


def holds_run(output_dir: str | Path) -> bool:
    """Whether ``output_dir`` holds a started or finished run: a last.ckpt or a results.json."""
    folder = Path(output_dir)
    return ((checkpoint_dir(folder) / LAST).is_file() or (folder / "results.json").is_file()
            or any(folder.glob("*/results.json")))


def move_aside(output_dir: str | Path) -> Path:
    """Move everything in ``output_dir`` (but the lock of the running command) to
    ``<parent>/.replaced/<name>-<time>`` and return that folder; nothing is deleted, and ``ois table`` does not
    read it (:func:`ois_lightning.protocol.results.collect` skips hidden folders)."""
    folder = Path(output_dir)
    base = folder.parent / ASIDE_DIR / f"{folder.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    aside, n = base, 1
    while aside.exists():
        n += 1
        aside = base.with_name(f"{base.name}-{n}")
    aside.mkdir(parents=True)
    for entry in folder.iterdir():
        if entry.name not in KEEP:
            entry.rename(aside / entry.name)
    return aside


def claim(cfg: DictConfig) -> Optional[Path]:
    """Make ``cfg.output_dir`` the folder of this run before anything is written there: refuse a folder holding a
    run (:func:`holds_run`) of other settings, or one a fresh start would overwrite; with ``restart=true`` move
    that run aside first (returned). Writes settings.json (a folder with no run yet is simply taken)."""
    folder = Path(cfg.output_dir)
    settings = result_settings(cfg)
    resume = cfg.ckpt_path == "last"
    if resume and cfg.restart:
        raise RunFolderError("ckpt_path=last resumes the run in output_dir, restart=true moves it aside: give one")
    problem = None
    if holds_run(folder):
        try:
            old = stored_settings(folder)
        except RunFolderError as e:
            old, problem = None, str(e)
        changed = {k for k in set(old or {}) | set(settings) if (old or {}).get(k) != settings.get(k)}
        if problem is None and old is not None and changed and not (resume and changed <= set(EXTENDABLE)):
            problem = (f"output_dir={folder} holds a run of other settings ({describe_changes(old, settings)}); "
                       "give another output_dir=, or restart=true to move that run aside and start over")
        elif problem is None and not resume:
            problem = (f"output_dir={folder} already holds a run of these settings; ckpt_path=last resumes it, "
                       "restart=true moves it aside and starts over")
    if problem is not None and not cfg.restart:
        raise RunFolderError(problem)
    moved = move_aside(folder) if problem is not None else None
    atomic_write(folder / SETTINGS_FILE, lambda f: json.dump({"settings": settings}, f, indent=1, sort_keys=True))
    return moved


def run_of_checkpoint(ckpt: str | Path) -> Path:
    """The run folder a checkpoint belongs to: the folder above ``checkpoints/``, else the file's folder."""
    parent = Path(ckpt).parent
    return parent.parent if parent.name == checkpoint_dir(".").name else parent


def eval_dir(cfg: DictConfig) -> Path:
    """Where ``ois eval`` writes when no ``output_dir=`` is given: ``<run>/eval/<datasets>-<hash>`` beside the
    checkpoint's run (the config's output_dir without a checkpoint); the hash (8 hex digits of the settings
    fingerprint) gives each protocol, dataset or setting a folder of its own."""
    base = run_of_checkpoint(cfg.ckpt) if cfg.ckpt is not None else Path(cfg.output_dir)
    return base / EVAL_DIR / f"{'+'.join(cfg.data.test)}-{settings_fingerprint(cfg)[:8]}"


def refuse_training_run(output_dir: str | Path, command: str) -> None:
    """One line when ``output_dir`` holds a training run (its settings.json or last.ckpt), whose files an
    evaluation must not replace."""
    folder = Path(output_dir)
    if (folder / SETTINGS_FILE).is_file() or (checkpoint_dir(folder) / LAST).is_file():
        raise RunFolderError(f"output_dir={folder} is a training run's folder; {command} writes its results "
                             "elsewhere (leave output_dir unset for <run>/eval/..., or give another folder)")

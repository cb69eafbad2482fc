"""``ois sweep SWEEP.yaml --local``: run a W&B grid sweep file without a W&B server.

The grid of the sweep file is expanded here (:func:`ois_lightning.grids.sweep_file.load_sweep`) and every point
runs as a subprocess of the sweep's own ``command`` (``${interpreter}`` = this Python, ``${args_no_hyphens}`` = the
point's ``key=value`` tokens), followed by ``output_dir=<runs>/<sweep>/<row>/seed<k>`` and the extra overrides.
W&B runs offline unless ``WANDB_MODE`` is set (``wandb sync <output_dir>/wandb/offline-run-*`` later).

Resumable: a point is skipped when every results.json it writes is valid, of its seed and of its settings
(:func:`ois_lightning.protocol.results.settings_fingerprint` of the point's config, so a rerun with other overrides
reruns it, saying which keys changed). Any other point is (re)run, resuming its training from
``<output_dir>/checkpoints/last.ckpt`` (``ckpt_path=last``) when the folder's settings.json
(:mod:`ois_lightning.protocol.run_folder`) has the point's settings; a run of other settings (or an unfinished one
that cannot be resumed) is moved aside first, never deleted, and the next rerun resumes the new one. A point
counts as done only when its process exits 0 and leaves such results. Each point runs under
:mod:`ois_lightning.grids.supervise`: in its own process group, ended with the runner (even a ``kill -9`` of it);
with GPUs each running point gets its own ``CUDA_VISIBLE_DEVICES``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..utils.atomic import atomic_write
from ..config.schema import ConfigError
from .sweep_file import ARG_MACROS, GridPoint, Sweep, load_sweep, resolve_point
from ..utils.lock import in_use
from ..protocol.metrics import format_metric
from ..protocol.results import (LAST, ResultsError, checkpoint_dir, describe_changes, read_results, result_settings,
                                results_paths)
from ..protocol.run_folder import RunFolderError, holds_run, move_aside, stored_settings
from .supervise import GRACE_S
from ..utils.warm_start import Process, popen, share_cores

TERMINATE_GRACE_S = GRACE_S + 10.0  # the supervisor's grace for the point, then its own exit
FAILED_MARK = "sweep_failed"  # in output_dir: the exit code of the point's last run, when that run failed


@dataclass
class Status:
    """Whether a job's results are complete; if not, why."""

    finished: bool
    reason: str = ""


@dataclass
class Job:
    """One grid point to run: where its results go, the argv that produces them and the settings they record."""

    index: int
    point: GridPoint
    row: str
    output_dir: Path
    argv: list[str]
    results: list[Path]  # one results.json per test dataset (ois_lightning.protocol.results.results_paths)
    settings: dict[str, Any]  # result_settings of the point's config

    @property
    def label(self) -> str:
        return f"{self.row} seed{self.point.seed}"

    def status(self) -> Status:
        """Finished when every results.json exists, follows the schema, and has this seed and these settings, and
        the last run this runner started for the point did not fail."""
        for path in self.results:
            if not path.is_file():
                return Status(False, f"no {path.name} yet")
            try:
                run = read_results(path)
            except ResultsError as e:
                return Status(False, f"unusable results ({e})")
            if run.seed != self.point.seed:
                return Status(False, f"{path} is of seed {run.seed}")
            if run.settings != self.settings:
                return Status(False, f"settings changed since {path}: {describe_changes(run.settings, self.settings)}")
        mark = self.output_dir / FAILED_MARK
        if mark.is_file():
            return Status(False, f"its last run failed ({mark.read_text().strip()})")
        return Status(True)


def expand_command(sweep: Sweep, point: GridPoint, python: str) -> list[str]:
    """The sweep's ``command`` with W&B's macros filled in as the agent would (``${env}`` is dropped: the
    subprocess gets the environment directly)."""
    argv: list[str] = []
    for token in sweep.command:
        if token == "${env}":
            continue
        if token == "${interpreter}":
            argv.append(python)
        elif token == "${program}":
            if "program" not in sweep.data:
                raise ConfigError(f"{sweep.path}: command uses ${{program}} but the file has no 'program' key")
            argv.append(str(sweep.data["program"]))
        elif token in ARG_MACROS:
            argv += point.args(token)
        elif token.startswith("${"):
            raise ConfigError(f"{sweep.path}: command macro {token} is not supported by `ois sweep --local` "
                              f"(use ${{env}}, ${{interpreter}}, ${{program}}, {', '.join(ARG_MACROS)})")
        else:
            argv.append(token)
    return argv


def plan(sweep: Sweep, runs_dir: str | Path, extra: list[str], python: str = sys.executable) -> list[Job]:
    """One :class:`Job` per grid point; every point's config is resolved first, so a bad row fails fast."""
    if any(o.startswith("output_dir=") for o in extra):
        raise ConfigError(f"{sweep.path}: output_dir is set per point (<runs-dir>/<sweep>/<row>/seed<k>); "
                          "use --runs-dir instead of an output_dir= override")
    jobs = []
    for i, point in enumerate(sweep.points):
        cfg = resolve_point(point, extra)
        row = cfg.row or Path(point.config).stem
        out = Path(runs_dir) / sweep.name / row / f"seed{point.seed}"
        argv = expand_command(sweep, point, python) + list(extra) + [f"output_dir={out}"]
        paths = list(results_paths(out, list(cfg.data.test)).values())
        jobs.append(Job(i, point, row, out, argv, paths, result_settings(cfg)))
    dirs = [j.output_dir for j in jobs]
    dup = sorted({str(d) for d in dirs if dirs.count(d) > 1})
    if dup:
        raise ConfigError(f"{sweep.path}: several grid points write to {dup[0]} (rows need distinct `row:` names)")
    return jobs


def _summary_text(job: Job) -> str:
    """NoC90, 5-mIoU and NoF95 of each results.json of a finished job, prefixed by the dataset."""
    parts = []
    for path in job.results:
        data = json.loads(path.read_text())
        s = data["summary"]
        cells = [f"{k} {format_metric(s[k])}" for k in ("NoC90", "5-mIoU", "NoF95") if k in s]
        parts.append(f"{data.get('dataset')}: " + ", ".join(cells))
    return "; ".join(parts)


def visible_gpus() -> list[str]:
    """The GPUs points may use: ``CUDA_VISIBLE_DEVICES`` when set, else every device torch sees (none: [])."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_slots(gpus: Sequence[str], parallel: int) -> list[str]:
    """``gpus`` split into min(parallel, len(gpus)) contiguous groups, each a ``CUDA_VISIBLE_DEVICES`` value."""
    k = min(parallel, len(gpus))
    return [",".join(gpus[i * len(gpus) // k:(i + 1) * len(gpus) // k]) for i in range(k)]


class _Terminated(Exception):
    pass


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated(signal.Signals(signum).name)


def _stop(procs: list[Process]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()  # the supervisor ends the point's process group
    deadline = time.monotonic() + TERMINATE_GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _start(job: Job, env: dict[str, str], gpus: str) -> tuple[Process, str]:
    """Launch ``job`` under the supervisor (dies with this process), logging to ``<output_dir>/train.log``;
    warm (:mod:`ois_lightning.utils.warm_start`: no imports to repeat) where that gives the same process."""
    argv = list(job.argv)
    resumed = ""
    if holds_run(job.output_dir):
        try:
            same = stored_settings(job.output_dir) in (None, job.settings)
        except RunFolderError:  # an unreadable settings.json: that run cannot be resumed
            same = False
        if same and (checkpoint_dir(job.output_dir) / LAST).is_file():
            argv.append("ckpt_path=last")
            resumed = " (resuming from last.ckpt)"
        else:  # other settings, or results of another seed or of a failed run
            resumed = f" (from scratch: the run there moved to {move_aside(job.output_dir)})"
    if gpus:
        env = dict(env, CUDA_VISIBLE_DEVICES=gpus)
        resumed += f" on CUDA_VISIBLE_DEVICES={gpus}"
    job.output_dir.mkdir(parents=True, exist_ok=True)
    (job.output_dir / FAILED_MARK).unlink(missing_ok=True)
    log_path = job.output_dir / "train.log"
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(argv)}\n")
    supervised = [sys.executable, "-m", "ois_lightning.grids.supervise", *argv]
    return popen(supervised, env, log_path, die_with_caller=True), resumed


def run_local(sweep_path: str | Path, extra: Optional[list[str]] = None, parallel: int = 1,
              runs_dir: str | Path = "runs", out: Callable[[str], Any] = lambda line: print(line, flush=True),
              gpus: Optional[Sequence[str]] = None, python: str = sys.executable,
              seeds: Optional[Sequence[int]] = None) -> int:
    """Run every unfinished grid point (``parallel`` at a time, each on its own share of ``gpus``, default
    :func:`visible_gpus`) with ``python`` as the command's ``${interpreter}`` (a launcher such as
    ``sweeps/slurm/bin/python`` runs each point as one srun step), only the points of ``seeds`` if given;
    0 when all points end with exit code 0 and complete results, 1 if any failed
    (their logs are ``<output_dir>/train.log``) or was left to a live run holding its output_dir's lock
    (:func:`ois_lightning.utils.lock.in_use`), 130 when interrupted (SIGINT / SIGTERM: the running points
    are terminated)."""
    if parallel < 1:
        raise ConfigError(f"--parallel must be >= 1, got {parallel}")
    sweep = load_sweep(sweep_path)
    if seeds is not None:  # a subset of the grid's seeds (the demo's fast mode)
        sweep.points = [p for p in sweep.points if p.seed in seeds]
    jobs = plan(sweep, runs_dir, list(extra or []), python)
    n = len(jobs)
    todo: list[tuple[Job, Status]] = []
    for job in jobs:
        status = job.status()
        if status.finished:
            out(f"[{job.index + 1}/{n}] {job.label}: finished, skipping ({', '.join(map(str, job.results))})")
            continue
        todo.append((job, status))
        if any(path.exists() for path in job.results):
            out(f"[{job.index + 1}/{n}] {job.label}: rerun: {status.reason}")
    slots = gpu_slots(visible_gpus() if gpus is None else list(gpus), parallel) or [""]
    out(f"sweep {sweep.name}: {n} points, {n - len(todo)} finished, {len(todo)} to run, {parallel} at a time"
        + (f", GPUs {' | '.join(slots)}" if slots != [""] else ""))
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "offline")
    # every point starts its own W&B service: one shared with this process would outlive a killed point and keep
    # its run id "in use" when the point resumes
    env.pop("WANDB_SERVICE", None)
    share_cores(env, parallel)  # N runs share the machine's cores
    running: dict[Process, tuple[Job, float, str]] = {}
    failed: list[Job] = []
    busy: list[Job] = []  # held by a live run elsewhere (another runner, an agent): left to it
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        while todo or running:
            while todo and len(running) < parallel:
                job, status = todo.pop(0)
                holder = in_use(job.output_dir)
                if holder:
                    busy.append(job)
                    out(f"[{job.index + 1}/{n}] {job.label}: in use by {holder}, leaving it to that run")
                    continue
                slot = min(slots, key=lambda g: sum(used == g for _, _, used in running.values()))
                proc, how = _start(job, env, slot)
                running[proc] = (job, time.monotonic(), slot)
                out(f"[{job.index + 1}/{n}] {job.label}: running{how}, log {job.output_dir / 'train.log'}")
            time.sleep(0.2)
            for proc in [p for p in running if p.poll() is not None]:
                job, start, _ = running.pop(proc)
                took = time.monotonic() - start
                status = job.status()
                if proc.returncode == 0 and status.finished:
                    out(f"[{job.index + 1}/{n}] {job.label}: done in {took:.0f}s ({_summary_text(job)})")
                else:
                    failed.append(job)
                    why = "" if proc.returncode else f"; {status.reason}"
                    atomic_write(job.output_dir / FAILED_MARK, lambda f: f.write(f"exit code {proc.returncode}\n"))
                    out(f"[{job.index + 1}/{n}] {job.label}: FAILED after {took:.0f}s (exit code "
                        f"{proc.returncode}{why}); see {job.output_dir / 'train.log'}")
    except (KeyboardInterrupt, _Terminated) as e:
        out(f"sweep {sweep.name}: interrupted ({e or 'SIGINT'}); stopping {len(running)} run(s); "
            "re-run the same command to finish the missing points")
        _stop(list(running))
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    out(f"sweep {sweep.name}: {n - len(failed) - len(busy)}/{n} points finished"
        + (f", {len(failed)} failed: {', '.join(j.label for j in failed)}" if failed else "")
        + (f", {len(busy)} in use by other runs: {', '.join(j.label for j in busy)}" if busy else ""))
    return 1 if failed or busy else 0

"""``ois sweep SWEEP.yaml --local``: run a W&B grid sweep file without a W&B server.

The grid of the sweep file is expanded here (:func:`ois_lightning.grid.load_sweep`) and every point runs as a
subprocess of the sweep's own ``command`` (``${interpreter}`` = this Python, ``${args_no_hyphens}`` = the
point's ``key=value`` tokens), followed by ``output_dir=<runs>/<sweep>/<row>/seed<k>`` and the extra overrides.
W&B runs offline unless ``WANDB_MODE`` is set (``wandb sync <output_dir>/wandb/offline-run-*`` later).

Resumable: a point whose ``results.json`` is valid is skipped; any other point is (re)run, resuming its
training from ``<output_dir>/checkpoints/last.ckpt`` (``ckpt_path=last``) when that exists.
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
from typing import Any, Callable, Optional

from .config import ConfigError
from .grid import ARG_MACROS, GridPoint, Sweep, load_sweep, resolve_point
from .metrics import format_metric
from .table import ResultsError, read_results, results_paths

TERMINATE_GRACE_S = 30.0


@dataclass
class Job:
    """One grid point to run: where its results go and the argv that produces them."""

    index: int
    point: GridPoint
    row: str
    output_dir: Path
    argv: list[str]

    @property
    def label(self) -> str:
        return f"{self.row} seed{self.point.seed}"

    results: list[Path]  # one results.json per test dataset (ois_lightning.table.results_paths)

    def finished(self) -> bool:
        """True when every results.json exists, follows the schema and belongs to this seed."""
        try:
            return all(read_results(path).seed == self.point.seed for path in self.results)
        except ResultsError:
            return False


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
        jobs.append(Job(i, point, row, out, argv, list(results_paths(out, list(cfg.data.test)).values())))
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


class _Terminated(Exception):
    pass


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated(signal.Signals(signum).name)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + TERMINATE_GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_local(sweep_path: str | Path, extra: Optional[list[str]] = None, parallel: int = 1,
              runs_dir: str | Path = "runs", out: Callable[[str], Any] = lambda line: print(line, flush=True)) -> int:
    """Run every unfinished grid point (``parallel`` at a time); 0 when all points end with a valid
    results.json, 1 if any failed (their logs are ``<output_dir>/train.log``), 130 when interrupted
    (SIGINT / SIGTERM: the running points are terminated)."""
    if parallel < 1:
        raise ConfigError(f"--parallel must be >= 1, got {parallel}")
    sweep = load_sweep(sweep_path)
    jobs = plan(sweep, runs_dir, list(extra or []))
    n = len(jobs)
    todo = []
    for job in jobs:
        if job.finished():
            out(f"[{job.index + 1}/{n}] {job.label}: finished, skipping ({', '.join(map(str, job.results))})")
        else:
            todo.append(job)
    out(f"sweep {sweep.name}: {n} points, {n - len(todo)} finished, {len(todo)} to run, {parallel} at a time")
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "offline")
    # N runs share the machine's cores: without this every run starts one torch thread per core and the
    # oversubscribed cores spin (tens of times slower on 2 cores).
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // parallel)))
    running: dict[subprocess.Popen, tuple[Job, float]] = {}
    failed: list[Job] = []
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        while todo or running:
            while todo and len(running) < parallel:
                job = todo.pop(0)
                argv = list(job.argv)
                if (job.output_dir / "checkpoints" / "last.ckpt").is_file():
                    argv.append("ckpt_path=last")
                job.output_dir.mkdir(parents=True, exist_ok=True)
                with open(job.output_dir / "train.log", "a") as log:
                    log.write(f"\n$ {' '.join(argv)}\n")
                    log.flush()
                    running[subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)] = (
                        job, time.monotonic())
                resumed = " (resuming from last.ckpt)" if argv[-1] == "ckpt_path=last" else ""
                out(f"[{job.index + 1}/{n}] {job.label}: running{resumed}, log {job.output_dir / 'train.log'}")
            time.sleep(0.2)
            for proc in [p for p in running if p.poll() is not None]:
                job, start = running.pop(proc)
                took = time.monotonic() - start
                if proc.returncode == 0 and job.finished():
                    out(f"[{job.index + 1}/{n}] {job.label}: done in {took:.0f}s ({_summary_text(job)})")
                else:
                    failed.append(job)
                    out(f"[{job.index + 1}/{n}] {job.label}: FAILED after {took:.0f}s (exit code "
                        f"{proc.returncode}); see {job.output_dir / 'train.log'}")
    except (KeyboardInterrupt, _Terminated) as e:
        out(f"sweep {sweep.name}: interrupted ({e or 'SIGINT'}); stopping {len(running)} run(s); "
            "re-run the same command to finish the missing points")
        _stop(list(running))
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    out(f"sweep {sweep.name}: {n - len(failed)}/{n} points finished"
        + (f", {len(failed)} failed: {', '.join(j.label for j in failed)}" if failed else ""))
    return 1 if failed else 0

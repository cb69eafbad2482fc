"""Commands of the miniature paper run side by side: each started warm, logged to its own file, with its share of
the cores (as ``ois sweep --parallel`` gives its points)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..utils.warm_start import Process, popen, share_cores


def run_jobs(jobs: Sequence[tuple[str, list[str], Path]], parallel: int) -> list[str]:
    """Run each ``(name, argv, log)`` (started warm, :mod:`ois_lightning.utils.warm_start`; stdout and stderr
    into ``log``, emptied first) up to ``parallel`` at a time, each with the share of the cores ``ois sweep
    --parallel`` gives its points (:func:`share_cores`); returns ``"name (exit code N: last line of its log;
    log L)"`` of each that failed."""
    env = share_cores(dict(os.environ), parallel)
    pending = list(jobs)
    running: list[tuple[str, Process, Path]] = []
    failed = []
    while pending or running:
        while pending and len(running) < max(1, parallel):
            name, argv, log = pending.pop(0)
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text("")
            running.append((name, popen(argv, env=env, log=log), log))
        name, proc, log = running.pop(0)
        if proc.wait() != 0:
            last = (log.read_text().strip().splitlines() or ["no output"])[-1]
            failed.append(f"{name} (exit code {proc.returncode}: {last}; log {log})")
    return failed

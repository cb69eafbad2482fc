"""``python -m ois_lightning.grids.supervise CMD...``: run one sweep point so that nothing of it outlives the runner.

The point runs in its own session (process group), so its whole tree (dataloader workers, DDP ranks) can be
signalled at once. This supervisor dies with the sweep runner however the runner ends, SIGKILL included: the
runner starts it with :func:`die_with_parent` (Linux ``prctl(PR_SET_PDEATHSIG, SIGTERM)``). On SIGTERM,
SIGINT or SIGHUP it sends SIGTERM to the point's group, waits up to :data:`GRACE_S` for the point to exit,
then SIGKILLs the group; leftovers of a point that exited by itself are SIGKILLed too. The exit status is the
point's (128 + N for signal N). A supervisor started warm (:mod:`ois_lightning.utils.warm_start`) forks the point
(a ``python`` command) from itself instead of starting a new interpreter, so the point skips the imports too.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any, Optional

from ..utils import warm_start
from ..utils.warm_start import die_with_parent

GRACE_S = 30.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class _Forked:
    """A forked child running a ``python`` argv in this process's image, with Popen's ``pid`` / ``wait`` /
    ``poll``; its own session and default signal handlers, as after an exec."""

    def __init__(self, argv: list[str]) -> None:
        parent = os.getpid()
        self.returncode: Optional[int] = None
        self.pid = os.fork()
        if self.pid == 0:  # the point
            code = 1
            try:
                os.setsid()
                die_with_parent(parent)()
                warm_start.reset_signals()
                code = warm_start.run_python(argv[1:])
            finally:  # never return into the supervisor's code
                warm_start.finish(code)

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode


def supervise(argv: list[str], grace_s: float = GRACE_S) -> int:
    """Run ``argv`` as the leader of a new session and return its exit status (see the module docstring)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    if warm_start.in_warm_child() and argv[:1] == [sys.executable]:
        child: Any = _Forked(argv)
    else:
        child = subprocess.Popen(argv, start_new_session=True, preexec_fn=die_with_parent(os.getpid()))
    try:
        code = child.wait()
    except _Stop:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        code = child.poll()
    finally:
        _signal_group(child.pid, signal.SIGKILL)  # the rest of the tree (or all of it after the grace period)
    code = child.wait() if code is None else code
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(supervise(sys.argv[1:]))

"""``python -m ois_lightning.grids.supervise CMD...``: run one sweep point so that nothing of it outlives the runner.

The point runs in its own session (process group), so its whole tree (dataloader workers, DDP ranks) can be
signalled at once. This supervisor dies with the sweep runner however the runner ends, SIGKILL included: the
runner starts it with :func:`die_with_parent` (Linux ``prctl(PR_SET_PDEATHSIG, SIGTERM)``). On SIGTERM,
SIGINT or SIGHUP it sends SIGTERM to the point's group, waits up to :data:`GRACE_S` for the point to exit,
then SIGKILLs the group; leftovers of a point that exited by itself are SIGKILLed too. The exit status is the
point's (128 + N for signal N).
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import Any, Callable

GRACE_S = 30.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` for a child of process ``parent`` (the caller): the kernel sends the child SIGTERM when
    ``parent`` dies (Linux); a child whose parent died before that was set up exits at once."""
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None

    def preexec() -> None:
        if libc is not None:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def supervise(argv: list[str], grace_s: float = GRACE_S) -> int:
    """Run ``argv`` as the leader of a new session and return its exit status (see the module docstring)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
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

"""One live ``ois train`` / ``ois eval`` per output directory: the lock file ``<output_dir>/ois.lock``.

The file holds the holder's pid, host, start time and command, and an exclusive ``flock`` is kept on it while
the run lives (the kernel drops it when the process dies, however it dies). Taking the lock:

- free (no file, or an empty one): taken;
- held (flock busy): refused with one line naming the holder;
- left by a dead process of this host (flock free; the recorded pid is gone or was reused): taken over, with a
  one-line notice;
- left by another host: refused (its process cannot be checked from here), naming host, pid and the file to
  delete if that run is gone.

Under DDP only the launching process (every rank variable 0) takes it, so torchrun / Lightning / srun workers
of the same run do not lock each other out.
"""
from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

LOCK_FILE = "ois.lock"
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
F = TypeVar("F", bound=Callable[..., Any])


class LockError(RuntimeError):
    """The output directory is in use by another run (one-line message)."""


def launching_rank() -> bool:
    """True in the process that launches a run: every rank variable of torchrun / Lightning / SLURM is 0 or unset."""
    return all(os.environ.get(k, "0") == "0" for k in RANK_VARIABLES)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _flock(fd: int) -> Optional[bool]:
    """True: locked; False: another open file holds it; None: the filesystem has no flock (NFS without locks)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            return None
        raise


def _holder(fd: int) -> dict:
    """The lock file's record ({} when empty or torn)."""
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        record = json.loads(os.read(fd, 65536).decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _describe(record: dict) -> str:
    return (f"pid {record.get('pid', '?')} on host {record.get('host', '?')} "
            f"(`{record.get('command', '?')}`, started {record.get('started', '?')})")


def _acquire(path: Path, command: str) -> int:
    """An open, flocked fd of ``path`` holding our record; :class:`LockError` when the directory is in use."""
    host = socket.gethostname()
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            locked = _flock(fd)
            record = _holder(fd)
            if locked is False:
                raise LockError(f"{path.parent} is in use by {_describe(record)}; wait for it or stop it")
            if os.fstat(fd).st_ino != os.stat(path).st_ino:  # the file was removed by its holder meanwhile
                os.close(fd)
                continue
        except FileNotFoundError:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        if record:
            pid = record.get("pid")
            if record.get("host") != host:
                os.close(fd)
                raise LockError(f"{path.parent} is locked by {_describe(record)}; if that run is gone, delete {path}")
            if locked is None and isinstance(pid, int) and pid > 0 and _pid_alive(pid):
                os.close(fd)
                raise LockError(f"{path.parent} is in use by {_describe(record)}; wait for it or stop it")
            print(f"ois: taking over the stale lock {path} of {_describe(record)}: that process is gone",
                  file=sys.stderr)
        mine = {"pid": os.getpid(), "host": host, "command": command,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(mine).encode(), 0)
        os.fsync(fd)
        return fd


def in_use(output_dir: str | Path) -> Optional[str]:
    """Who holds the lock of ``output_dir`` by its record (a live pid of this host, or another host), else None;
    read only, so it never gets in the way of a run taking the lock."""
    path = Path(output_dir) / LOCK_FILE
    try:
        record = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not record:
        return None
    pid = record.get("pid")
    mine = record.get("host") == socket.gethostname()
    return None if mine and not (isinstance(pid, int) and pid > 0 and _pid_alive(pid)) else _describe(record)


@contextmanager
def output_dir_lock(output_dir: str | Path, command: str) -> Iterator[Path]:
    """Hold ``<output_dir>/ois.lock`` for the block (see the module docstring); the file is removed after."""
    path = Path(output_dir) / LOCK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(path, command)
    except OSError as e:
        from ..config.schema import ConfigError

        raise ConfigError(f"output_dir={output_dir}: cannot create {path} ({e.strerror or e}); "
                          "expected a writable directory") from None
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def locks_output_dir(command: str) -> Callable[[F], F]:
    """Decorate ``f(cfg, ...)`` to run holding the lock of ``cfg.output_dir`` (in the launching rank only)."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(cfg: Any, *args: Any, **kwargs: Any) -> Any:
            if not launching_rank():
                return func(cfg, *args, **kwargs)
            with output_dir_lock(cfg.output_dir, command):
                return func(cfg, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate

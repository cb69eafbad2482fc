"""Warm starts: a ``python ...`` command run in a fork of a process that has already imported the package.

Each ``ois train`` process spends about 15 CPU-seconds importing torch, Lightning (which imports torchmetrics,
torchvision and transformers) and W&B before it does any work; a local sweep of tiny CPU runs (the miniature,
the tests) pays that for every point. :func:`start` runs ``[sys.executable, ...]`` as that interpreter would
(``-m module``, ``-c code`` or ``script.py``, then the arguments) in a child of one *fork server*
(:mod:`multiprocessing`'s ``forkserver`` start method, started once per calling process with :data:`PRELOAD`
imported and nothing else run: no torch thread pool, no CUDA). The child gets the command's environment, working
directory and output files, its own process, exit status and signals, so a caller sees what a ``subprocess.Popen``
of the same argv gives: :class:`WarmProcess` has Popen's ``pid``, ``poll``, ``wait``, ``terminate``, ``kill`` and
``returncode``.

Where that would not be the same process, :func:`start` returns None and the caller starts it cold: another
interpreter (a launcher such as ``sweeps/slurm/bin/python``), a GPU the command could use (a CUDA process must
not be a fork of the server's imports), thread settings other than the fork server's (OpenMP and BLAS read
theirs when loaded), or no ``forkserver`` on the platform.
"""
from __future__ import annotations

import atexit
import ctypes
import logging
import multiprocessing as mp
import os
import runpy
import signal
import subprocess
import sys
from multiprocessing import forkserver
from multiprocessing import util as mp_util
from pathlib import Path
from typing import Callable, Mapping, Optional

PRELOAD = ["ois_lightning.cli", "ois_lightning.lit.train"]  # torch, Lightning, W&B: the cost of `ois train`
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")  # read once, when loaded
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_server: dict[str, object] = {}  # the fork server's context and thread settings, once started in this process
_in_warm_child = False


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


def share_cores(env: dict[str, str], parallel: int) -> dict[str, str]:
    """``env`` with ``OMP_NUM_THREADS`` set, unless it is, to this machine's cores // ``parallel``: the share of
    each of ``parallel`` processes run side by side (without it each starts one torch thread per core and the
    oversubscribed cores spin, tens of times slower on 2 cores). Every runner gives the same share, so their
    commands find the fork server with their own thread settings (:func:`can_start`)."""
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, parallel))))
    return env


def in_warm_child() -> bool:
    """True in a process :func:`start` made (its own forks may then skip the imports too)."""
    return _in_warm_child


def _threads(env: Mapping[str, str]) -> tuple[Optional[str], ...]:
    return tuple(env.get(k) for k in THREAD_VARS)


def _may_use_cuda(env: Mapping[str, str]) -> bool:
    """The command could reach a GPU: ``CUDA_VISIBLE_DEVICES`` names devices, or is unset where torch sees one."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return visible.strip() not in ("", "-1")
    import torch

    return torch.cuda.device_count() > 0


def can_start(argv: list[str], env: Mapping[str, str]) -> bool:
    """Whether :func:`start` runs ``argv`` warm under ``env`` (see the module docstring)."""
    if len(argv) < 2 or argv[0] != sys.executable or "forkserver" not in mp.get_all_start_methods():
        return False
    if _may_use_cuda(env):
        return False
    return "context" not in _server or _server["threads"] == _threads(env)


def _context(env: Mapping[str, str]) -> mp.context.BaseContext:
    """The fork server's context; the first call starts it under ``env``'s thread settings."""
    if "context" not in _server:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        saved = {k: os.environ.get(k) for k in THREAD_VARS}
        try:
            for key, value in zip(THREAD_VARS, _threads(env)):
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            forkserver.ensure_running()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        _server.update(context=ctx, threads=_threads(env))
    return _server["context"]  # type: ignore[return-value]


def fresh_process_state() -> None:
    """What a new interpreter would not share with the fork server: the exit handlers of the modules it imported
    clean up *its* state (W&B's media temp folder, removed by the first child to exit, is one), so the child keeps
    only logging's flush, multiprocessing's clean-up of the child's own objects and the handlers its code adds; NumPy's global random state is drawn anew
    (``random`` reseeds itself at a fork)."""
    atexit._clear()
    atexit.register(logging.shutdown)
    atexit.register(mp_util._exit_function)  # the child's own multiprocessing objects (semaphores, children)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()


def reset_signals() -> None:
    """The dispositions a fresh interpreter starts with (a fork keeps its parent's Python handlers)."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def run_python(args: list[str]) -> int:
    """Run ``python args...`` in this process (``-m module``, ``-c code`` or a script path, then its arguments)
    and return the exit status the interpreter would give: SystemExit's code, 1 after an uncaught exception
    (traceback on stderr through ``sys.excepthook``)."""
    try:
        if args[0] == "-m":
            sys.argv = [args[1], *args[2:]]
            sys.path.insert(0, os.getcwd())
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        elif args[0] == "-c":
            sys.argv = ["-c", *args[2:]]
            sys.path.insert(0, "")
            exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        else:
            sys.argv = list(args)
            sys.path.insert(0, str(Path(args[0]).resolve().parent))
            runpy.run_path(args[0], run_name="__main__")
        code = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    return code


def finish(code: int) -> None:
    """End this process as an interpreter ends: exit handlers, flushed output, then exit with ``code``."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _redirect(stdout: Optional[str], stderr: Optional[str]) -> None:
    """Point fds 1 / 2 at the files (appended; one file once if both are the same path)."""
    opened: dict[str, int] = {}
    for fd, path in ((1, stdout), (2, stderr)):
        if path is None:
            continue
        if path not in opened:
            opened[path] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        os.dup2(opened[path], fd)
    for fd in opened.values():
        os.close(fd)
    sys.stdout = open(1, "w", closefd=False, buffering=1)
    sys.stderr = open(2, "w", closefd=False, buffering=1)


def _child(argv: list[str], env: dict[str, str], cwd: str, stdout: Optional[str], stderr: Optional[str]) -> None:
    """In the fork server's child: become ``argv``'s process, then exit with its status."""
    global _in_warm_child
    _in_warm_child = True
    # The fork server ends when no process holds its "alive" pipe; it hands a copy to every child, which would keep
    # it (and, below, this child) alive after the caller died. Dropped here, the caller's is the last copy.
    alive = getattr(forkserver._forkserver, "_forkserver_alive_fd", None)
    if alive is not None:
        os.close(alive)
        forkserver._forkserver._forkserver_alive_fd = None
    die_with_parent(os.getppid())()  # the fork server, which ends with the caller
    fresh_process_state()
    reset_signals()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    _redirect(stdout, stderr)
    finish(run_python(argv[1:]))


class WarmProcess:
    """A command started by :func:`start`, with the part of ``subprocess.Popen``'s interface the runners use."""

    def __init__(self, argv: list[str], process: mp.process.BaseProcess) -> None:
        self.args = argv
        self._process = process

    @property
    def pid(self) -> int:
        return int(self._process.pid)

    @property
    def returncode(self) -> Optional[int]:
        return self._process.exitcode

    def poll(self) -> Optional[int]:
        return self._process.exitcode

    def wait(self, timeout: Optional[float] = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return self._process.exitcode

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def send_signal(self, sig: int) -> None:
        if self._process.exitcode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


def start(argv: list[str], env: Optional[Mapping[str, str]] = None, cwd: str | Path | None = None,
          stdout: str | Path | None = None, stderr: str | Path | None = None) -> Optional[WarmProcess]:
    """Start ``argv`` (``[sys.executable, ...]``) warm with ``env`` (default: this process's), in ``cwd``
    (default: this process's), its stdout / stderr appended to the given files (default: this process's); None
    when it cannot run warm (:func:`can_start`): start it with ``subprocess.Popen`` instead."""
    env = dict(os.environ if env is None else env)
    if not can_start(argv, env):
        return None
    process = _context(env).Process(target=_child, args=(list(argv), env, str(cwd or os.getcwd()),
                                                         None if stdout is None else str(stdout),
                                                         None if stderr is None else str(stderr)))
    main = sys.modules["__main__"]
    # the fork server would re-run the caller's main script in the child (multiprocessing's "safe importing of
    # main"); the child runs argv instead, so it is given an empty main module to set up
    sys.modules["__main__"] = type(sys)("__main__")
    try:
        process.start()
    finally:
        sys.modules["__main__"] = main
    return WarmProcess(list(argv), process)


Process = subprocess.Popen | WarmProcess


def popen(argv: list[str], env: Optional[Mapping[str, str]] = None, log: str | Path | None = None,
          die_with_caller: bool = False, cwd: str | Path | None = None) -> Process:
    """:func:`start` ``argv`` with stdout and stderr appended to ``log`` (default: this process's), else the same
    command as a ``subprocess.Popen`` (``die_with_caller``: it gets SIGTERM when this process dies, Linux)."""
    warm = start(argv, env, cwd, stdout=log, stderr=log)
    if warm is not None:
        return warm
    preexec = die_with_parent(os.getpid()) if die_with_caller else None
    if log is None:
        return subprocess.Popen(argv, env=None if env is None else dict(env), cwd=cwd, preexec_fn=preexec)
    with open(log, "a") as out:
        return subprocess.Popen(argv, env=None if env is None else dict(env), cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=preexec)

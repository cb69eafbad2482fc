"""Warm starts: a command forked from the fork server behaves as the same command started cold (exit status,
output, argv, environment, working directory, signals, exit handlers, random state), and the cases that must
start cold do."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ois_lightning.utils import warm_start

pytestmark = pytest.mark.skipif("forkserver" not in __import__("multiprocessing").get_all_start_methods(),
                                reason="no forkserver start method on this platform")

SHOW = """
import json, os, sys
print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "env": os.environ.get("WARM_TEST"), "main": __name__}))
print("to stderr", file=sys.stderr)
sys.exit(int(os.environ.get("WARM_EXIT", "0")))
"""


def both(argv: list[str], tmp_path: Path, env: dict[str, str], tag: str) -> list[tuple[int, str, str]]:
    """``argv`` started warm and cold, each with its own stdout / stderr files: [(status, out, err)] x 2."""
    results = []
    for how in ("warm", "cold"):
        out, err = tmp_path / f"{tag}-{how}.out", tmp_path / f"{tag}-{how}.err"
        if how == "warm":
            proc = warm_start.start(argv, env, cwd=tmp_path, stdout=out, stderr=err)
            assert isinstance(proc, warm_start.WarmProcess)
            code = proc.wait(timeout=120)
        else:
            with open(out, "w") as o, open(err, "w") as e:
                code = subprocess.run(argv, env=env, cwd=tmp_path, stdout=o, stderr=e, timeout=120).returncode
        results.append((code, out.read_text(), err.read_text()))
    return results


def test_a_warm_command_is_the_cold_command(tmp_path: Path):
    script = tmp_path / "show.py"
    script.write_text(SHOW)
    (tmp_path / "showmod.py").write_text(SHOW)
    env = dict(os.environ, WARM_TEST="yes", WARM_EXIT="3")
    for tag, argv in (("script", [sys.executable, str(script), "a", "b=1"]),
                      ("module", [sys.executable, "-m", "showmod", "x"]),
                      ("code", [sys.executable, "-c", SHOW, "y", "z"])):
        (warm, cold) = both(argv, tmp_path, env, tag)
        assert warm == cold and warm[0] == 3 and '"env": "yes"' in warm[1] and '"main": "__main__"' in warm[1], tag
        assert warm[2] == "to stderr\n"


def test_an_uncaught_exception_and_the_ois_cli_end_as_in_a_fresh_interpreter(tmp_path: Path):
    env = dict(os.environ)
    (warm, cold) = both([sys.executable, "-c", "import sys; print('before'); raise ValueError('boom')"], tmp_path,
                        env, "raise")
    assert warm[0] == cold[0] == 1 and warm[1] == cold[1] == "before\n"
    assert warm[2].splitlines()[-1] == cold[2].splitlines()[-1] == "ValueError: boom"
    (warm, cold) = both([sys.executable, "-m", "ois_lightning", "train", "nope.yaml"], tmp_path, env, "cli")
    assert warm == cold and warm[0] == 2 and warm[2].count("\n") == 1 and "nope.yaml" in warm[2]


def test_exit_handlers_and_random_state_are_the_childs_own(tmp_path: Path):
    """The first child to exit must not run the fork server's exit handlers (W&B's media folder would go for every
    later child); each child's own handlers run; NumPy's global random state differs between children."""
    code = ("import atexit, sys, numpy, wandb.sdk.data_types._private as p; "
            "atexit.register(print, 'own handler'); "
            "print(p.MEDIA_TMP.name, __import__('os').path.isdir(p.MEDIA_TMP.name), numpy.random.randint(1 << 30))")
    outs = []
    for i in range(2):
        out = tmp_path / f"{i}.out"
        assert warm_start.start([sys.executable, "-c", code], stdout=out, stderr=out).wait(timeout=120) == 0
        outs.append(out.read_text().split("\n"))
    (folder0, there0, draw0), (folder1, there1, draw1) = (o[0].split() for o in outs)
    assert there0 == there1 == "True" and os.path.isdir(folder1)  # still there for the next child
    assert outs[0][1] == outs[1][1] == "own handler" and draw0 != draw1


def test_terminate_reaches_the_command_and_reports_its_signal(tmp_path: Path):
    out = tmp_path / "sleep.out"
    out.write_text("")
    proc = warm_start.start([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
                            stdout=out, stderr=out)
    deadline = time.monotonic() + 60
    while "up" not in out.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None and proc.pid != os.getpid()
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=0.1)
    proc.terminate()
    assert proc.wait(timeout=30) == -signal.SIGTERM and proc.returncode == -signal.SIGTERM


def test_what_must_start_cold_does(tmp_path: Path):
    env = dict(os.environ)
    assert warm_start.can_start([sys.executable, "-c", "pass"], env)
    assert not warm_start.can_start(["/usr/bin/env", "python3", "-c", "pass"], env)  # another interpreter
    assert not warm_start.can_start([sys.executable, "-c", "pass"], dict(env, CUDA_VISIBLE_DEVICES="0"))
    unset = {k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"}  # any GPU torch sees: cold
    assert warm_start.can_start([sys.executable, "-c", "pass"], unset) == (torch.cuda.device_count() == 0)
    warm_start.start([sys.executable, "-c", "pass"], env).wait(timeout=120)  # the server runs now
    other = {k: "7" for k in warm_start.THREAD_VARS}
    assert not warm_start.can_start([sys.executable, "-c", "pass"], dict(env, **other))
    log = tmp_path / "cold.log"
    proc = warm_start.popen([sys.executable, "-c", "import os; print(os.environ['OMP_NUM_THREADS'])"],
                            dict(env, **other), log=log)
    assert isinstance(proc, subprocess.Popen) and proc.wait(timeout=120) == 0 and log.read_text() == "7\n"


def test_every_runner_gives_a_process_the_same_share_of_the_cores():
    """``ois sweep --parallel N`` and the demo's pretrainings / evaluations give each process cores // N threads
    (so their commands find one fork server), and leave a thread count the caller set."""
    cores = os.cpu_count() or 1
    assert warm_start.share_cores({}, 2)["OMP_NUM_THREADS"] == str(max(1, cores // 2))
    assert warm_start.share_cores({}, 10 * cores)["OMP_NUM_THREADS"] == "1"
    assert warm_start.share_cores({"OMP_NUM_THREADS": "3"}, 2)["OMP_NUM_THREADS"] == "3"

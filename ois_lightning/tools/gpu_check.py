"""``make gpu-check`` (``python -m ois_lightning.tools.gpu_check``): the checks that need a CUDA GPU, in one report.

Runs ``pytest -m gpu tests/test_gpu.py`` and ``ois bench --device cuda`` at the paper's size (every section but
the tiny-size Table 4 grid), each in a subprocess with a time limit (8 minutes in all), then writes
``gpu_check.json`` and prints it as Markdown (format: docs/benchmarks.md, "GPU check"). Without CUDA it prints one
line and exits 0.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from ..utils.atomic import atomic_write

REPO = Path(__file__).resolve().parents[2]
BENCH_SECTIONS = ("per_click", "clicks", "clicker", "encoder", "sat", "train_step")
TESTS_TIMEOUT_S, BENCH_TIMEOUT_S = 180, 270
# report field -> (unit, path in bench.json, scale, the paper's Table 3 value on the authors' GPU or None)
FIELDS: dict[str, tuple[str, tuple[str, ...], float, float | None]] = {
    "spc_ois_ms": ("ms", ("per_click", "paper", "ois_s"), 1e3, 31.0),
    "spc_dense_ms": ("ms", ("per_click", "paper", "dense_s"), 1e3, 58.0),
    "ois_vs_dense": ("ratio", ("per_click", "paper", "ratio"), 1.0, 31 / 58),
    "spc_ois_quarter_logits_ms": ("ms", ("per_click", "paper_quarter_logits", "ois_s"), 1e3, None),
    "click20_vs_click1": ("ratio", ("clicks", "ratio_20_vs_1"), 1.0, None),
    "encoder_ms": ("ms", ("encoder", "s_per_image"), 1e3, None),
    "sat_latency_s": ("s", ("sat", "s"), 1.0, 9.2),
    "train_step_ms": ("ms", ("train_step", "vitb", "without_simulation", "mean_step_s"), 1e3, None),
    "train_step_with_simulation_ms": ("ms", ("train_step", "vitb", "with_simulation", "mean_step_s"), 1e3, None),
    "train_simulation_overhead": ("fraction", ("train_step", "vitb", "overhead_per_expected_rounds"), 1.0, None),
    "clicker_ms": ("ms", ("clicker", "clicker_s"), 1e3, None),
    "clicker_share_of_click": ("fraction", ("clicker", "share_of_click"), 1.0, None),
    "peak_ois_click_mb": ("MB", ("per_click", "paper", "ois_peak_mb"), 1.0, None),
    "peak_dense_click_mb": ("MB", ("per_click", "paper", "dense_peak_mb"), 1.0, None),
    "peak_encoder_mb": ("MB", ("encoder", "peak_mb"), 1.0, None),
    "peak_train_step_mb": ("MB", ("train_step", "vitb", "with_simulation", "peak_mb"), 1.0, None),
}


def gpu_machine() -> dict[str, Any]:
    """The GPU and the software stack the numbers come from."""
    props = torch.cuda.get_device_properties(0)
    return {"gpu": props.name, "gpu_count": torch.cuda.device_count(),
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "compute_capability": f"{props.major}.{props.minor}", "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "python": platform.python_version()}


def junit_cases(path: Path) -> list[dict[str, Any]]:
    """Outcome, seconds and message of each test case of a pytest ``--junitxml`` file."""
    cases = []
    for case in ET.parse(path).iter("testcase"):
        found = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        outcome = {"failure": "failed", "error": "error", "skipped": "skipped", None: "passed"}[
            None if found is None else found.tag]
        cases.append({"name": case.get("name"), "outcome": outcome, "s": float(case.get("time", 0)),
                      "message": "" if found is None else (found.get("message") or "").partition("\n")[0][:200]})
    return cases


def run_tests(timeout_s: float = TESTS_TIMEOUT_S) -> dict[str, Any]:
    """``pytest -m gpu tests/test_gpu.py`` in a subprocess: exit code (None: timed out), counts, cases and, unless
    it passed, the tail of its output."""
    with tempfile.TemporaryDirectory(prefix="ois_gpu_check_") as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", f"--junitxml={xml}",
               "tests/test_gpu.py"]
        try:
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
            code: int | None = proc.returncode
            tail = "" if code == 0 else (proc.stdout + proc.stderr)[-4000:]
        except subprocess.TimeoutExpired as e:
            code, tail = None, (e.stdout or b"")[-4000:].decode(errors="replace")
        cases = junit_cases(xml) if xml.is_file() else []
    return {"exit_code": code, "counts": dict(Counter(c["outcome"] for c in cases)), "cases": cases,
            "output_tail": tail}


def run_bench(timeout_s: float = BENCH_TIMEOUT_S) -> tuple[dict | None, str | None]:
    """``ois bench --device cuda`` (sections :data:`BENCH_SECTIONS`) in a subprocess: (bench.json payload, error)."""
    with tempfile.TemporaryDirectory(prefix="ois_gpu_bench_") as tmp:
        out = Path(tmp) / "bench.json"
        try:
            proc = subprocess.run([sys.executable, "-m", "ois_lightning.tools.gpu_check", "--bench-only", str(out)],
                                  cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None, f"timed out after {timeout_s:.0f} s"
        if proc.returncode != 0 or not out.is_file():
            return None, (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return json.loads(out.read_text()), None


def _lookup(payload: dict | None, path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(payload, dict) or key not in payload:
            return None
        payload = payload[key]
    return float(payload)  # type: ignore[arg-type]


def build_report(machine: dict, tests: dict, bench: dict | None, bench_error: str | None, elapsed_s: float) -> dict:
    """The gpu_check.json payload: outcome, machine, tests, the documented numbers (``FIELDS``), whole bench.json."""
    numbers = {}
    for name, (unit, path, scale, paper) in FIELDS.items():
        value = _lookup(bench, path)
        numbers[name] = {"value": None if value is None else value * scale, "unit": unit, "paper": paper}
    return {"ok": tests["exit_code"] == 0 and bench is not None, "machine": machine, "tests": tests,
            "numbers": numbers, "bench_error": bench_error, "elapsed_s": elapsed_s, "bench": bench}


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"


def markdown(report: dict) -> str:
    """The report as Markdown (what ``make gpu-check`` prints)."""
    m, t = report["machine"], report["tests"]
    counts = ", ".join(f"{n} {k}" for k, n in sorted(t["counts"].items())) or "no results"
    lines = [f"# GPU check: {'OK' if report['ok'] else 'FAILED'} ({report['elapsed_s']:.0f} s)", "",
             f"{m['gpu']} x {m['gpu_count']} ({m['gpu_memory_gib']} GiB, compute {m['compute_capability']}), "
             f"torch {m['torch']}, CUDA {m['cuda']}, cuDNN {m['cudnn']}, Python {m['python']}", "",
             f"## Tests (`pytest -m gpu tests/test_gpu.py`): {counts}"
             + ("" if t["exit_code"] is not None else " (TIMED OUT)"), "",
             "| test | outcome | s | message |", "|---|---|---|---|"]
    lines += [f"| {c['name']} | {c['outcome']} | {c['s']:.1f} | {c['message']} |" for c in t["cases"]]
    lines += ["", "## Bench (`ois bench --device cuda`, paper size: dav2-vitb widths, input 1036)"
              + (f": FAILED ({report['bench_error']})" if report["bench_error"] else ""), "",
              "| number | ours | unit | paper (Table 3) |", "|---|---|---|---|"]
    lines += [f"| {name} | {_fmt(n['value'])} | {n['unit']} | {_fmt(n['paper'])} |"
              for name, n in report["numbers"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when every GPU test passed and the bench ran (or without CUDA: skipped), else 1."""
    p = argparse.ArgumentParser(prog="python -m ois_lightning.tools.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu_check.json", help="report written atomically (default gpu_check.json)")
    p.add_argument("--bench-only", metavar="PATH", help=argparse.SUPPRESS)  # the bench subprocess of run_bench
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"gpu-check: skipped: no CUDA GPU visible to torch {torch.__version__} on this machine")
        return 0
    if args.bench_only:
        from .bench import run
        from .bench_report import write_json

        write_json(run(device="cuda", sections=BENCH_SECTIONS), args.bench_only)
        return 0
    start = time.perf_counter()
    tests = run_tests()
    bench, error = run_bench()
    report = build_report(gpu_machine(), tests, bench, error, time.perf_counter() - start)
    path = atomic_write(args.out, lambda f: json.dump(report, f, indent=1))
    print(markdown(report))
    print(f"wrote {path}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

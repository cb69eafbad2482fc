"""`make gpu-check` on a machine without CUDA: the skip line, the report format (from a fake bench.json) and the
``gpu`` marker's skip."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from ois_lightning.tools import gpu_check
from ois_lightning.tools.gpu_check import FIELDS, build_report, junit_cases, markdown

from .conftest import pytest_collection_modifyitems
from .helpers import REPO

MACHINE = {"gpu": "Fake GPU", "gpu_count": 1, "gpu_memory_gib": 80.0, "compute_capability": "9.0",
           "torch": torch.__version__, "cuda": "13.0", "cudnn": 91000, "python": "3.11.7"}
TESTS = {"exit_code": 0, "counts": {"passed": 2, "skipped": 1},
         "cases": [{"name": "test_a", "outcome": "passed", "s": 1.5, "message": ""}], "output_tail": ""}


def fake_bench() -> dict:
    """A bench.json holding every path the report reads, each value 0.002 (seconds, MB or a ratio)."""
    bench: dict = {}
    for _, path, _, _ in FIELDS.values():
        node = bench
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = 0.002
    return bench


def test_without_cuda_the_check_prints_one_line_and_exits_0(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    assert gpu_check.main([]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1 and out.startswith("gpu-check: skipped: no CUDA GPU")
    assert not list(tmp_path.iterdir())  # no report without a GPU


def test_with_cuda_the_check_writes_the_report(tmp_path, monkeypatch, capsys):
    """The flow on a GPU machine with its parts faked: gpu_check.json and the printed Markdown."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_check, "gpu_machine", lambda: MACHINE)
    monkeypatch.setattr(gpu_check, "run_tests", lambda: TESTS)
    monkeypatch.setattr(gpu_check, "run_bench", lambda: (fake_bench(), None))
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["machine"] == MACHINE and report["numbers"]["spc_ois_ms"]["value"] == pytest.approx(2.0)
    printed = capsys.readouterr().out
    assert printed.startswith("# GPU check: OK") and printed.endswith(f"wrote {out}\n")


def test_report_has_the_documented_fields_and_units():
    report = build_report(MACHINE, TESTS, fake_bench(), None, 12.0)
    assert report["ok"] and set(report) == {"ok", "machine", "tests", "numbers", "bench_error", "elapsed_s", "bench"}
    n = report["numbers"]
    assert n["spc_ois_ms"] == {"value": pytest.approx(2.0), "unit": "ms", "paper": 31.0}
    assert n["spc_dense_ms"]["paper"] == 58.0 and n["sat_latency_s"]["value"] == pytest.approx(0.002)
    assert n["peak_train_step_mb"] == {"value": 0.002, "unit": "MB", "paper": None}
    assert all(v["value"] is not None for v in n.values())
    json.dumps(report)  # serialisable as gpu_check.json
    md = markdown(report)
    assert md.startswith("# GPU check: OK (12 s)") and "Fake GPU x 1 (80.0 GiB, compute 9.0)" in md
    assert "| spc_ois_ms | 2 | ms | 31.0 |" in md and "| test_a | passed | 1.5 |  |" in md
    documented = re.search(r"^## GPU check[^\n]*\n(.*?)(?=^## |\Z)", (REPO / "docs" / "benchmarks.md").read_text(),
                           re.S | re.M)
    assert documented and set(re.findall(r"^\| `(\w+)` \|", documented.group(1), re.M)) == set(FIELDS)


def test_report_of_a_failed_bench_and_a_failed_test():
    tests = {"exit_code": 1, "counts": {"failed": 1}, "cases": [], "output_tail": "E   assert False"}
    report = build_report(MACHINE, tests, None, "timed out after 270 s", 3.0)
    assert not report["ok"] and all(v["value"] is None for v in report["numbers"].values())
    assert "FAILED (timed out after 270 s)" in markdown(report) and "| spc_ois_ms | - | ms | 31.0 |" in markdown(report)


def test_junit_cases(tmp_path: Path):
    suite = ET.Element("testsuite")
    for name, child in (("ok", None), ("bad", "failure"), ("off", "skipped")):
        case = ET.SubElement(suite, "testcase", name=name, time="0.5")
        if child:
            ET.SubElement(case, child, message=f"{name} happened\nmore")
    ET.ElementTree(suite).write(tmp_path / "j.xml")
    assert [(c["name"], c["outcome"], c["message"]) for c in junit_cases(tmp_path / "j.xml")] == [
        ("ok", "passed", ""), ("bad", "failed", "bad happened"), ("off", "skipped", "off happened")]


class FakeItem:
    """What the collection hook uses of a pytest item."""

    def __init__(self, *marks: str) -> None:
        self.marks = [getattr(pytest.mark, m).mark for m in marks]

    def get_closest_marker(self, name: str) -> pytest.Mark | None:
        return next((m for m in self.marks if m.name == name), None)

    def add_marker(self, marker: pytest.MarkDecorator) -> None:
        self.marks.append(marker.mark)


@pytest.mark.parametrize("cuda", [False, True])
def test_gpu_items_are_skipped_without_cuda(monkeypatch, cuda: bool):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    gpu, cpu = FakeItem("gpu"), FakeItem("slow")
    pytest_collection_modifyitems(None, [gpu, cpu])  # type: ignore[arg-type]
    skip = gpu.get_closest_marker("skip")
    assert (skip is not None and skip.kwargs["reason"] == "needs a CUDA GPU") is not cuda
    assert cpu.get_closest_marker("skip") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks this machine's skip without CUDA")
def test_run_tests_here_skips_every_gpu_test():
    """The gpu-check's pytest run on this machine: every test of tests/test_gpu.py marked gpu, each skipped."""
    tests = gpu_check.run_tests()
    assert tests["exit_code"] == 0 and tests["counts"] == {"skipped": 3} and tests["output_tail"] == ""
    assert {c["message"] for c in tests["cases"]} == {"needs a CUDA GPU"}


def test_a_test_run_past_its_limit_is_reported_not_raised():
    tests = gpu_check.run_tests(timeout_s=0.5)
    assert tests["exit_code"] is None and tests["cases"] == [] and isinstance(tests["output_tail"], str)
    assert "(TIMED OUT)" in markdown(build_report(MACHINE, tests, None, "not run", 1.0))

"""The Makefile's housekeeping: `make clean` removes what `make demo` and `make test` made, never a user's runs."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .helpers import REPO


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_make_clean_keeps_trainings_and_paper_mini_results(tmp_path: Path):
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    made = [".venv", "demo_out", ".pytest_cache"]
    kept = ["runs/table4/full/seed0", "paper_mini_out/runs", "paper_mini_full_out/runs"]
    for folder in made + kept:
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "file").write_text("x")
    subprocess.run(["make", "--no-print-directory", "clean"], cwd=tmp_path, check=True, capture_output=True)
    assert [f for f in made if (tmp_path / f).exists()] == []
    assert [f for f in kept if not (tmp_path / f / "file").is_file()] == []

"""The import structure (docs/architecture.md): Lightning only in ``ois_lightning/lit/`` and ``ois eval`` needs none
of it; W&B only in ``ois_lightning/tracking/wandb_run.py``, which imports no Lightning; training does not import the table
collation (``ois_lightning/grids/table.py``). Each check runs in a fresh interpreter, so nothing imported by other
tests counts."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import REPO, TINY

LIGHTNING = ("lightning", "pytorch_lightning", "lightning_fabric")
LOADED = f"sorted(m for m in sys.modules if m.split('.')[0] in {LIGHTNING!r})"


def run_python(code: str) -> None:
    """Run ``code`` in a fresh interpreter (W&B offline); a failed assertion there fails the test with its output."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_ois_eval_logging_to_wandb_loads_no_lightning(tmp_path: Path):
    out = tmp_path / "eval"
    argv = ["eval", "experiments/tiny.yaml", *TINY, "model.backbone.random_init=true", "data.layered.size=112",
            "data.layered.test_length=2", "clicks.max_eval=5", "logger.kind=wandb", "logger.log_images=1",
            f"output_dir={out}"]
    run_python(f"import sys\nfrom ois_lightning.cli import main\nassert main({argv!r}) == 0\n"
               f"assert not {LOADED}, {LOADED}\n")
    assert (out / "results.json").is_file() and list((out / "wandb").glob("offline-run-*"))


def test_training_does_not_import_the_table_collation():
    run_python("import sys\nimport ois_lightning.lit.train\nassert 'ois_lightning.grids.table' not in sys.modules\n")


def test_tracking_imports_no_lightning():
    run_python(f"import sys\nimport ois_lightning.tracking.wandb_run\nassert not {LOADED}, {LOADED}\n")

"""``results.json``: where it goes, how it is read back, and the settings fingerprint it records.

The fingerprint hashes the settings that change a run's numbers (:func:`result_settings`), computed from a
config alone (no model is built), so ``ois sweep`` can compare a planned point with a finished one and
``ois table`` can refuse to average seeds trained or evaluated differently. The seed is not part of it (a
row's seeds share one fingerprint; results.json records the seed on its own), nor are the weights
(:func:`ois_lightning.protocol.evaluate.fingerprint` hashes those for the evaluation journal).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from omegaconf import DictConfig

from ..config.schema import to_dict

# Config keys (and sections) that do not change the numbers: names, output places, weight/cache locations,
# the hardware layout (data.batch_size is the global batch whatever the devices), logging and monitoring.
# train.threads: `ois train` records the count it used (another count changes the weights at float rounding, not
# the experiment), so a rerun with --parallel changed does not retrain finished points (docs/training.md).
EXCLUDED_KEYS = (
    "base", "name", "table", "row", "seed", "output_dir", "ckpt", "ckpt_path", "restart", "logger", "weights",
    "data.root", "data.paths", "data.num_workers", "data.depth.folder",
    "eval.feature_cache", "eval.cache_max_gb", "eval.threads",
    "train.accelerator", "train.devices", "train.num_nodes", "train.strategy", "train.threads",
    "train.val_every_n_steps", "train.val_objects", "train.log_every_n_steps", "train.check_data",
)
# Files whose name (not folder) identifies what they hold: moving them does not change the numbers.
FILE_NAME_KEYS = ("model.backbone.checkpoint", "data.depth.checkpoint", "data.cocolvis_allow_list")


class ResultsError(ValueError):
    """A results.json that is missing, unreadable or does not follow the schema (one-line message)."""


def _flatten(data: Mapping, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if name in EXCLUDED_KEYS:
            continue
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = Path(value).name if name in FILE_NAME_KEYS and isinstance(value, str) else value
    return flat


def result_settings(cfg: DictConfig | Mapping) -> dict[str, Any]:
    """The settings that change results, as ``{dotted.key: value}``: every config key but :data:`EXCLUDED_KEYS`
    (keys added to the schema later count too), files of :data:`FILE_NAME_KEYS` by name."""
    return _flatten(to_dict(cfg) if isinstance(cfg, DictConfig) else cfg)


def _digest(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def settings_fingerprint(cfg: DictConfig | Mapping) -> str:
    """SHA-256 (hex) of :func:`result_settings`: what results.json records as ``fingerprint``."""
    return _digest(result_settings(cfg))


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 4) -> str:
    """The keys whose values differ, ``key old -> new`` (``unset`` for a missing key), at most ``limit`` named."""
    missing = object()
    keys = sorted(k for k in set(old) | set(new) if old.get(k, missing) != new.get(k, missing))
    text = ", ".join(f"{k} {json.dumps(old.get(k)) if k in old else 'unset'} -> "
                     f"{json.dumps(new.get(k)) if k in new else 'unset'}" for k in keys[:limit])
    return text + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


@dataclass
class RunResult:
    """One evaluated training run (one row, one seed)."""

    path: Path
    table: Optional[str]
    row: Optional[str]
    seed: int
    ids: list[str]
    ious: list[list[float]]
    max_clicks: int
    dataset: Optional[str] = None
    settings: dict[str, Any] = field(default_factory=dict)  # result_settings of the saved config

    @property
    def fingerprint(self) -> str:
        return _digest(self.settings)


def results_paths(output_dir: str | Path, datasets: Sequence[str]) -> dict[str, Path]:
    """Where each test dataset's results.json goes: ``<output_dir>/results.json`` for one dataset, else
    ``<output_dir>/<dataset>/results.json`` for each (every benchmark is reported on its own, as in isegm)."""
    out = Path(output_dir)
    if not datasets:
        raise ValueError("data.test is empty: name at least one dataset")
    if len(datasets) == 1:
        return {datasets[0]: out / "results.json"}
    return {name: out / name / "results.json" for name in datasets}


def read_results(path: str | Path) -> RunResult:
    """Parse and check one ``results.json`` (schema in docs/evaluation.md); :class:`ResultsError` if broken. The
    fingerprint is recomputed from the saved config, so files written before it was recorded compare too."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ResultsError(f"{path}: cannot read JSON ({e})") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: expected a JSON object, got {type(data).__name__}")
    per_object, config = data.get("per_object"), data.get("config")
    if not isinstance(per_object, dict) or not isinstance(config, dict) or not isinstance(data.get("summary"), dict):
        raise ResultsError(f"{path}: expected keys 'summary', 'per_object' and 'config' holding objects")
    ids, ious = per_object.get("ids"), per_object.get("ious")
    if not isinstance(ids, list) or not isinstance(ious, list) or not ids or len(ids) != len(ious):
        raise ResultsError(f"{path}: per_object.ids and per_object.ious must be non-empty lists of equal length")
    if len(set(map(str, ids))) != len(ids):
        raise ResultsError(f"{path}: per_object.ids has duplicates")
    clicks = config.get("clicks") or {}
    max_clicks, target = int(clicks.get("max_eval", 20)), clicks.get("target_iou")
    min_clicks = int(clicks.get("min_eval", 1))
    for i, curve in enumerate(ious):
        if not isinstance(curve, list) or not all(isinstance(v, (int, float)) and 0.0 <= v <= 1.0 for v in curve):
            raise ResultsError(f"{path}: per_object.ious[{i}] must be a list of IoUs in [0, 1]")
        stopped = target is not None and min_clicks <= len(curve) < max_clicks and curve[-1] >= target
        if len(curve) < max_clicks and not stopped:
            raise ResultsError(f"{path}: per_object.ious[{i}] has {len(curve)} IoUs; expected {max_clicks} "
                               f"(clicks.max_eval), or fewer ending at IoU >= clicks.target_iou={target}")
    seed = data.get("seed", config.get("seed"))
    if not isinstance(seed, int):
        raise ResultsError(f"{path}: 'seed' must be an integer, got {seed!r}")
    dataset = data.get("dataset")
    return RunResult(path, config.get("table"), config.get("row"), seed, [str(i) for i in ids], ious, max_clicks,
                     str(dataset) if dataset is not None else None, result_settings(config))


EVAL_DIR = "eval"  # in a run folder: what `ois eval` of its checkpoint wrote (not the run's own results)


def collect(runs_dir: str | Path) -> tuple[list[RunResult], list[str]]:
    """All valid results.json below ``runs_dir`` (sorted) and one message per broken one; evaluations of a run's
    checkpoint (``<run>/eval/``) and hidden folders (runs moved aside) are not runs of a table."""
    runs, problems = [], []
    root = Path(runs_dir)
    for path in sorted(root.rglob("results.json")):
        parts = path.relative_to(root).parts[:-1]
        if any(part == EVAL_DIR or part.startswith(".") for part in parts):
            continue
        try:
            runs.append(read_results(path))
        except ResultsError as e:
            problems.append(str(e))
    return runs, problems


LAST = "last.ckpt"  # the newest checkpoint of a run, in checkpoint_dir (ckpt_path=last resumes it)


def checkpoint_dir(output_dir: str | Path) -> Path:
    """Where ``ois train`` keeps its checkpoints."""
    return Path(output_dir) / "checkpoints"

"""The import structure (docs/architecture.md), read from the source: no import circle, at most four modules at the
package top, ``model/`` a leaf, Lightning only in ``lit/`` (and ``protocol/`` without it), W&B only in ``tracking/``,
no file over 350 lines. Then, each in a fresh interpreter so that nothing imported by other tests counts: ``ois
eval`` loads no Lightning, ``tracking/`` imports none, training does not import the table collation."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from .helpers import REPO, TINY


LIGHTNING = ("lightning", "pytorch_lightning", "lightning_fabric")
LOADED = f"sorted(m for m in sys.modules if m.split('.')[0] in {LIGHTNING!r})"
PACKAGE = REPO / "ois_lightning"
TOP_LEVEL = {"__init__", "__main__", "cli", "checkpoint"}
MODEL_MAY_IMPORT = {"torch", "timm", "transformers", "numpy", "safetensors"}  # besides the standard library


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _nodes(tree: ast.AST, on_import: bool) -> list[ast.AST]:
    """Every node of ``tree``; ``on_import``: only those run when the module is imported (not function bodies)."""
    if not on_import:
        return list(ast.walk(tree))
    found, todo = [], [tree]
    while todo:
        node = todo.pop()
        found.append(node)
        todo += [c for c in ast.iter_child_nodes(node) if not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return found


def imports(name: str, on_import: bool = False) -> set[str]:
    """Every module ``name`` imports anywhere in its file (function bodies and ``TYPE_CHECKING`` blocks too;
    ``on_import``: only when it is imported), absolute: package modules by their dotted name (``from pkg import
    submodule`` names the submodule), others by their top-level package."""
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in _nodes(ast.parse(path.read_text()), on_import):
        if isinstance(node, ast.Import):
            found |= {a.name if a.name.startswith("ois_lightning") else a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if not target.startswith("ois_lightning"):
                found.add(target.split(".")[0])
                continue
            found |= {f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names}
    return found - {name}


GRAPH = {name: imports(name) for name in MODULES}


def importers_of(packages: tuple[str, ...]) -> set[str]:
    return {name for name, deps in GRAPH.items() if any(d.split(".")[0] in packages for d in deps)}


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(d for d in GRAPH[name] if d in GRAPH):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[name] = 2

    for name in GRAPH:
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_package_top_holds_only_entry_points():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top <= TOP_LEVEL, f"at the top of ois_lightning/ besides {sorted(TOP_LEVEL)}: {sorted(top - TOP_LEVEL)}"


def test_model_is_a_leaf():
    allowed = MODEL_MAY_IMPORT | set(sys.stdlib_module_names)

    def outside(dep: str) -> bool:
        return not dep.startswith("ois_lightning.model") if dep.startswith("ois_lightning") else dep not in allowed

    bad = {name: sorted(filter(outside, deps)) for name, deps in GRAPH.items()
           if name.startswith("ois_lightning.model") and any(map(outside, deps))}
    assert not bad, bad


def test_lightning_only_in_lit_and_wandb_only_in_tracking():
    lightning = {n for n in importers_of(LIGHTNING) if not n.startswith("ois_lightning.lit")}
    wandb = {n for n in importers_of(("wandb",)) if not n.startswith("ois_lightning.tracking")}
    assert not lightning and not wandb, (lightning, wandb)


def test_importing_protocol_imports_no_lightning():
    """What importing any module of ``protocol/`` imports, module by module, never imports Lightning (what its
    functions import when called is the fresh-interpreter test of ``ois eval`` below)."""
    on_import = {name: imports(name, on_import=True) for name in MODULES}
    reached, todo = set(), [n for n in MODULES if n.startswith("ois_lightning.protocol")]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo += [d for d in on_import[name] if d in MODULES]
    assert not {n for n in reached if on_import[n] & set(LIGHTNING)}, sorted(reached)


def test_no_file_over_350_lines():
    files = {**MODULES, **{f"docs/{p.name}": p for p in sorted((REPO / "docs").glob("*.md"))}}
    long = {name: n for name, path in files.items() if (n := len(path.read_text().splitlines())) > 350}
    assert not long, long


def run_python(code: str) -> None:
    """Run ``code`` in a fresh interpreter (W&B offline); a failed assertion there fails the test with its output."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_tracking_and_ois_eval_load_no_lightning_and_training_no_table_collation(tmp_path: Path):
    """In one fresh interpreter: importing the W&B layer, then ``ois eval`` logging to W&B, load no Lightning;
    then importing the training entry point does not import the table collation (whatever the first two imported
    counts against it, so the check can only be stricter than in an interpreter of its own)."""
    out = tmp_path / "eval"
    argv = ["eval", "experiments/tiny.yaml", *TINY, "model.backbone.random_init=true", "data.layered.size=112",
            "data.layered.test_length=2", "clicks.max_eval=5", "logger.kind=wandb", "logger.log_images=1",
            "train.strategy=ddp", f"output_dir={out}"]  # ddp: what sweeps/torchrun.sh passes
    run_python(f"import sys\nimport ois_lightning.tracking.wandb_run\nassert not {LOADED}, ('tracking', {LOADED})\n"
               f"from ois_lightning.cli import main\nassert main({argv!r}) == 0\n"
               f"assert not {LOADED}, ('ois eval', {LOADED})\n"
               "import ois_lightning.lit.train\nassert 'ois_lightning.grids.table' not in sys.modules\n")
    assert (out / "results.json").is_file() and list((out / "wandb").glob("offline-run-*"))


def test_the_strategies_known_without_lightning_are_lightnings():
    from ois_lightning.lit.strategies import COMMON, strategy_names

    assert set(COMMON) <= set(strategy_names())

"""Loading a config in layers, recording which layer set each key.

Precedence, lowest first: schema defaults (:mod:`ois_lightning.config.schema`) <- the YAML ``base:`` chain (root
first, ``${oc.env:VAR,default}`` values resolved from this machine's environment) <- the local layer
(``experiments/local.yaml``, git-ignored: this machine's paths) <- ``key=value`` command-line overrides. Then a
null ``model.backbone.checkpoint`` / ``data.depth.checkpoint`` takes ``weights.<network name>``. A checkpoint's
stored config (:mod:`ois_lightning.checkpoint`) takes the place of the base chain, and every weight comes from the
checkpoint; the other layers and every check are the same.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .schema import ConfigError, schema_defaults
from .checks import check, leaves

LOCAL_ENV = "OIS_LOCAL_CONFIG"  # path of the local layer instead of experiments/local.yaml; empty: none
LOCAL_NAME = "local.yaml"  # next to the root of the base chain (experiments/base.yaml -> experiments/local.yaml)
STORED_LOCAL_FOLDER = Path("experiments")  # a stored config has no base chain here: its local layer is found here
PATH_KEYS = ("data.root", "data.paths", "weights", "model.backbone.checkpoint", "data.depth.checkpoint",
             "data.depth.folder", "data.cocolvis_allow_list", "eval.feature_cache", "ckpt", "ckpt_path",
             "output_dir")  # shown with their layer by `ois print-config`
ENV_REF = re.compile(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)")
Sources = dict[str, str]
StoredLayer = tuple[str, dict]  # (label errors name it by, e.g. "ckpt=PATH"; the stored config)


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated within one mapping (plain PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                seen = first.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it
                continue
            if seen is not None:
                value = value_node.value if isinstance(value_node, yaml.ScalarNode) else "..."
                raise _DuplicateKey(None, None, f"duplicate key '{key}' (value {value!r}; first set on line {seen})",
                                    key_node.start_mark)
            first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def path_label(path: Path) -> str:
    """A file as layers and errors name it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def read_yaml(path: Path) -> dict:
    """A YAML file whose top level is a mapping; :class:`ConfigError` naming the file (and line) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.MarkedYAMLError as e:
        line = f" line {e.problem_mark.line + 1}:" if e.problem_mark else ""
        what = e.problem if isinstance(e, _DuplicateKey) else f"not valid YAML ({e.problem or e.context})"
        raise ConfigError(f"{path}:{line} {what}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__} {data!r}")
    return data


def _base_chain(path: Path) -> list[tuple[Path, dict]]:
    """Files from the root base to ``path`` itself; each may name its ``base:`` relative to itself."""
    chain: list[tuple[Path, dict]] = []
    current: Optional[Path] = path.resolve()
    while current is not None:
        data = read_yaml(current)
        chain.append((current, data))
        base = data.get("base")
        if base is None:
            break
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"{path_label(current)}: base={base!r} must be the path of a YAML file")
        parent = (current.parent / base).resolve()
        if not parent.is_file():
            raise ConfigError(f"{path_label(current)}: base file '{base}' not found (looked for {parent})")
        if any(parent == p for p, _ in chain):
            loop = " -> ".join(path_label(p) for p, _ in chain)
            raise ConfigError(f"{path_label(current)}: base={base!r} makes a circular base chain ({loop} -> {base})")
        current = parent
    return chain[::-1]


def local_layer(folder: Optional[Path]) -> Optional[Path]:
    """The local layer: ``$OIS_LOCAL_CONFIG`` when set (empty: none), else ``local.yaml`` in ``folder`` (that
    of the root of the base chain), if present."""
    env = os.environ.get(LOCAL_ENV)
    if env is not None:
        if env and not Path(env).is_file():
            raise ConfigError(f"{LOCAL_ENV}={env}: file not found (unset it, or empty for no local layer)")
        return Path(env) if env else None
    if folder is None:
        return None
    path = folder / LOCAL_NAME
    return path if path.is_file() else None


def _merge(cfg: DictConfig, layer: dict, source: str, sources: Sources) -> DictConfig:
    """``layer`` merged into ``cfg`` (in place: ``OmegaConf.merge`` would copy the whole config first); its leaf
    keys are recorded as set by ``source``."""
    try:
        cfg.merge_with(layer)
    except (OmegaConfBaseException, TypeError) as e:  # TypeError: a mapping given a list or the reverse
        key, value = getattr(e, "full_key", None), getattr(e, "value", None)
        if not key:  # OmegaConf names no key for some mismatches (a section given a scalar): find the leaf
            key, value = next(((k, v) for k, v in leaves(layer) if not _merges(cfg, k, v)), ("?", None))
        elif value is None:
            value = _at(layer, key)
        raise ConfigError(f"{source}: bad key '{key}' (value {value!r}): {str(e).splitlines()[0]}") from None
    for key, _ in leaves(layer):  # re-inserted: ``sources`` lists keys in the order the layers set them
        sources.pop(key, None)
        sources[key] = source
    return cfg


def _merges(cfg: DictConfig, key: str, value: Any) -> bool:
    """Whether the single setting ``key: value`` merges into ``cfg``."""
    try:
        OmegaConf.merge(cfg, _nested(key, value))
    except (OmegaConfBaseException, TypeError):
        return False
    return True


def _nested(key: str, value: Any) -> dict:
    """``{"a": {"b": value}}`` for key ``a.b``."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def _at(layer: dict, key: str) -> Any:
    """The value of dotted ``key`` in a nested mapping (None if absent)."""
    node: Any = layer
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _override(item: str) -> dict:
    """One ``key=value`` command-line override as a nested mapping."""
    if "=" not in item or not item.split("=", 1)[0].strip():
        raise ConfigError(f"command line: override '{item}' is not of the form key=value")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist([item]))  # type: ignore[return-value]
    except (OmegaConfBaseException, yaml.YAMLError) as e:
        raise ConfigError(f"command line '{item}': cannot parse the value ({str(e).splitlines()[0]})") from None


def load_config_with_sources(path: Optional[str | Path] = None, overrides: Optional[list[str]] = None, *,
                             stored: Optional[StoredLayer] = None) -> tuple[DictConfig, Sources]:
    """The validated, resolved config and, per leaf key, the layer that set it (absent: schema default).
    ``stored``: a checkpoint's config, in place of the base chain of ``path``."""
    cfg, sources = schema_defaults(), {}
    if stored is not None and path is not None:
        raise ConfigError(f"{stored[0]}: a stored config and a YAML file ({path}) cannot both be the base")
    chain = _base_chain(Path(path)) if path is not None else []
    for file, data in chain:
        cfg = _merge(cfg, {k: v for k, v in data.items() if k != "base"}, path_label(file), sources)
    if stored is not None:
        cfg = _merge(cfg, stored[1], stored[0], sources)
    folder = chain[0][0].parent if chain else (STORED_LOCAL_FOLDER if stored is not None else None)
    local = local_layer(folder)
    if local is not None:
        data = read_yaml(local)
        if "base" in data:
            raise ConfigError(f"{path_label(local)}: base={data['base']!r} is not allowed in the local layer "
                              "(it applies over every config)")
        cfg = _merge(cfg, data, path_label(local), sources)
    if path is not None:
        cfg.base = str(Path(path))
    for item in overrides or []:
        cfg = _merge(cfg, _override(item), f"command line '{item}'", sources)
    _note_env(cfg, sources)
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"{sources.get(key, path or 'config')}: cannot resolve {key} "
                          f"({str(e).splitlines()[0]})") from None
    if stored is None:  # a checkpoint holds every weight: no weights files filled in or required
        _fill_weights(cfg, sources)
    check(cfg, sources, weights=stored is None)
    return cfg, sources


def load_config(path: Optional[str | Path] = None, overrides: Optional[list[str]] = None) -> DictConfig:
    """Schema defaults <- YAML base chain <- local layer <- ``key=value`` overrides; validated and resolved."""
    return load_config_with_sources(path, overrides)[0]


def _note_env(cfg: DictConfig, sources: Sources) -> None:
    """Keys whose value is an ``${oc.env:VAR,...}`` come from that variable when it is set."""
    for key, value in leaves(OmegaConf.to_container(cfg, resolve=False)):
        match = ENV_REF.search(value) if isinstance(value, str) else None
        if match:
            var = match.group(1)
            layer = sources.get(key, "default")
            sources[key] = f"env {var}" if var in os.environ else f"{layer} (env {var} unset)"


def _fill_weights(cfg: DictConfig, sources: Sources) -> None:
    """A null checkpoint of a named network takes ``weights.<name>`` (unless random weights are asked for)."""
    if cfg.model.backbone.random_init:
        return
    for key, name in (("model.backbone.checkpoint", cfg.model.backbone.name),
                      ("data.depth.checkpoint", cfg.data.depth.model)):
        path = cfg.weights.get(name) if name else None
        if path is not None and OmegaConf.select(cfg, key) is None:
            OmegaConf.update(cfg, key, path)
            sources[key] = f"{sources.get(f'weights.{name}', 'default')} (weights.{name})"


def source_comments(cfg: DictConfig, sources: Sources, every: bool = False) -> str:
    """YAML comment lines ``# key = value  # layer`` for the path keys (``every``: for all keys)."""
    rows = [(k, "null" if v is None else v) for k, v in leaves(OmegaConf.to_container(cfg, enum_to_str=True))
            if every or any(k == p or k.startswith(p + ".") for p in PATH_KEYS)]
    where = {k: sources.get(k, "default") for k, _ in rows}
    width = max((len(f"{k} = {v}") for k, v in rows), default=0)
    lines = [f"# {f'{k} = {v}':<{width}}  # {where[k]}" for k, v in rows]
    title = "# where each value comes from:" if every else "# where the paths come from (--sources: every key):"
    return "\n".join([title, *lines]) + "\n"

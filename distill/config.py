"""Configs as data: pydantic models loaded from YAML, with every field overridable from the command line.

Precedence (lowest to highest): model defaults < YAML file < ``--set dotted.key=value`` < explicit CLI options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .errors import ConfigError

C = TypeVar("C", bound=BaseModel)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML{where}: {what}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    return data


def parse_set_options(items: Iterable[str]) -> dict[str, Any]:
    """``["train.lr=1e-3", "data.shots=4"]`` -> ``{"train.lr": 0.001, "data.shots": 4}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        child = node.get(p)
        if not isinstance(child, dict):
            child = {}
            node[p] = child
        node = child
    node[parts[-1]] = value


def load_config(
    cls: type[C],
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> C:
    """Build ``cls`` from an optional YAML file plus dotted-key overrides (``None`` values are ignored)."""
    data: dict[str, Any] = read_yaml(path) if path else {}
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe_validation_error(e, path, overrides)) from None


#: At most this many bad fields are listed in one message.
MAX_REPORTED_ERRORS = 5


def describe_validation_error(error: ValidationError, path: str | Path | None = None,
                              overrides: Mapping[str, Any] | None = None) -> str:
    """Every bad field (up to :data:`MAX_REPORTED_ERRORS`), each with where it came from: ``--set`` or the YAML
    file's line number."""
    lines = _yaml_lines(path) if path else {}
    given = {k for k, v in (overrides or {}).items() if v is not None}
    parts = []
    errors = error.errors()
    for err in errors[:MAX_REPORTED_ERRORS]:
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        where = ""
        if loc in given:
            where = " (from --set/option)"
        else:
            line = next((lines[k] for k in _prefixes(loc) if k in lines), None)
            if line is not None:
                where = f" ({Path(path).name} line {line})"  # type: ignore[arg-type]
        parts.append(f"{loc}{where}: {err['msg']}")
    more = f"; and {len(errors) - MAX_REPORTED_ERRORS} more" if len(errors) > MAX_REPORTED_ERRORS else ""
    noun = "value" if len(errors) == 1 else f"values ({len(errors)})"
    return f"invalid config {noun}: {'; '.join(parts)}{more}"


def _prefixes(loc: str) -> list[str]:
    """``a.b.c`` -> ``[a.b.c, a.b, a]``: the deepest key the file has (a missing field is reported at its parent)."""
    parts = loc.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def _yaml_lines(path: str | Path) -> dict[str, int]:
    """Dotted key -> 1-based line of that key in a YAML file (nested mappings only; {} on any problem)."""
    try:
        root = yaml.compose(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    out: dict[str, int] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = f"{prefix}{key.value}"
                out[name] = key.start_mark.line + 1
                walk(value, name + ".")

    walk(root, "")
    return out


def dump_config(cfg: BaseModel, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically) so a run directory says exactly what ran."""
    from .io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))

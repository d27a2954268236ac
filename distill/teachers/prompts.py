"""Prompt construction for zero-shot teachers: template sets (open_clip's own lists) and class descriptions.

With descriptions, each template's prompt gets the class's description appended, so the single template
gives "a photo of a {name}. {description}" (Li et al., ICCV 2023).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import yaml

from ..errors import ConfigError

Template = Callable[[str], str]


def load_templates(spec: str) -> list[Template]:
    """``single`` | ``simple`` (7, DHO's ImageNet ensemble) | ``openai`` (80) | a file, one ``{c}`` template a line."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    if spec == "single":
        return [lambda c: f"a photo of a {c}."]
    if spec == "simple":
        return list(SIMPLE_IMAGENET_TEMPLATES)
    if spec == "openai":
        return list(OPENAI_IMAGENET_TEMPLATES)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"templates must be single, simple, openai or a file of templates; {spec!r} is none of these")
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise ConfigError(f"template file {path} holds no templates")
    bad = [ln for ln in lines if "{c}" not in ln]
    if bad:
        raise ConfigError(f"template {bad[0]!r} in {path} has no {{c}} placeholder")
    return [_format_template(ln) for ln in lines]


def _format_template(text: str) -> Template:
    return lambda c: text.replace("{c}", c)


def load_descriptions(path: Path | None) -> dict[str, str]:
    """Class name -> description text from a YAML or JSON mapping."""
    if path is None:
        return {}
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"descriptions file not found: {path}")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"descriptions file {path} is not valid YAML/JSON: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"descriptions file {path} must map class names to description strings")
    return {str(k): v.strip() for k, v in data.items()}


def prompt_name(class_name: str) -> str:
    """Folder names make poor prompts: ``t_shirt`` -> ``t shirt``."""
    return class_name.replace("_", " ").strip()


def build_prompts(
    names: Sequence[str], templates: Sequence[Template], descriptions: dict[str, str], keys: Sequence[str] | None = None
) -> list[list[str]]:
    """Prompts per class (``len(names)`` lists of ``len(templates)`` strings); ``keys`` look up descriptions."""
    keys = list(keys) if keys is not None else list(names)
    if descriptions:
        missing = [k for k, n in zip(keys, names) if k not in descriptions and n not in descriptions]
        if missing:
            raise ConfigError(f"descriptions file has no entry for class(es): {', '.join(missing[:5])}")
    out: list[list[str]] = []
    for key, name in zip(keys, names):
        desc = descriptions.get(key, descriptions.get(name, "")) if descriptions else ""
        out.append([(t(name) + (f" {desc}" if desc else "")) for t in templates])
    return out

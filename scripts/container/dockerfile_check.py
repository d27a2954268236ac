#!/usr/bin/env python3
"""Parse a Dockerfile and check what can be checked without building it (standard library only).

For images that cannot be built here (``Dockerfile.jetson`` needs an L4T base on an arm64 Jetson): every
instruction is a known one, continuation lines join, each ``${VAR}`` is an ``ARG``/``ENV`` declared before use
(global ``ARG`` before the first ``FROM``, re-declared inside a stage to be visible there), ``COPY --from`` names an
earlier stage, ``COPY`` sources exist in the build context, exec-form ``ENTRYPOINT``/``CMD``/``HEALTHCHECK CMD``
are valid JSON arrays of strings.

    python3 scripts/container/dockerfile_check.py Dockerfile.jetson --build-arg L4T_TAG=r36.4.0
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
                "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "MAINTAINER"}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[-+][^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped (``# syntax`` directives included)."""
    out: list[Instruction] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by Docker
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, args = buf.partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
        buf = ""
    if buf:
        raise ValueError(f"line {start}: instruction continues past the end of the file")
    return out


def _exec_form(args: str) -> list[str] | None:
    if not args.startswith("["):
        return None
    value = json.loads(args)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("exec form must be a JSON array of strings")
    return value


def check(path: Path, context: Path | None = None, build_args: dict[str, str] | None = None) -> dict[str, object]:
    """Problems found (empty when fine), the stages, the global ARGs with their defaults, the resolved base images."""
    context = context or path.parent
    instructions = parse(path.read_text())
    problems: list[str] = []
    global_args: dict[str, str | None] = {}
    stages: list[str] = []
    bases: list[str] = []
    scope: set[str] = set()
    seen_from = False
    build_args = build_args or {}

    def resolve(s: str, names: dict[str, str | None]) -> str:
        return _VAR.sub(lambda m: str(names.get(m.group(1) or m.group(2)) or ""), s)

    for ins in instructions:
        where = f"{path.name}:{ins.line}"
        if ins.keyword not in INSTRUCTIONS:
            problems.append(f"{where}: unknown instruction {ins.keyword}")
            continue
        used = {m.group(1) or m.group(2) for m in _VAR.finditer(ins.args)}
        if ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            if not seen_from:
                values = {**global_args, **build_args}
                global_args[name.strip()] = build_args.get(name.strip(), resolve(default, values) if default else None)
            else:
                scope.add(name.strip())
            continue
        if ins.keyword == "FROM":
            seen_from = True
            parts = ins.args.split()
            image = parts[0]
            missing = [v for v in used if v not in global_args]
            if missing:
                problems.append(f"{where}: FROM uses {', '.join(sorted(missing))} not declared by a global ARG")
            values = {**global_args, **build_args}
            bases.append(resolve(image, values))
            if len(parts) >= 3 and parts[1].upper() == "AS":
                stages.append(parts[2])
            else:
                stages.append(str(len(stages)))
            scope = set()
            continue
        if not seen_from:
            problems.append(f"{where}: {ins.keyword} before the first FROM")
        if ins.keyword == "ENV":
            for m in re.finditer(r"([A-Za-z_][A-Za-z0-9_]*)=", ins.args):
                scope.add(m.group(1))
        if ins.keyword not in ("RUN", "ENV", "LABEL", "HEALTHCHECK", "CMD", "ENTRYPOINT"):
            # RUN/CMD are evaluated by the shell at build/run time: variables there may be shell variables
            undeclared = [v for v in used if v not in scope]
            if undeclared:
                problems.append(f"{where}: {ins.keyword} uses {', '.join(sorted(undeclared))} not declared in this stage")
        if ins.keyword in ("COPY", "ADD"):
            words = [w for w in ins.args.split() if not w.startswith("--")]
            flags = [w for w in ins.args.split() if w.startswith("--")]
            frm = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            if frm is not None:
                if frm not in stages[:-1]:
                    problems.append(f"{where}: COPY --from={frm} names no earlier stage ({', '.join(stages[:-1])})")
            else:
                for src in words[:-1]:
                    if not (context / src).exists():
                        problems.append(f"{where}: COPY source {src} not in the build context {context}")
        if ins.keyword in ("ENTRYPOINT", "CMD") or (ins.keyword == "HEALTHCHECK" and " CMD " in f" {ins.args} "):
            args = ins.args.split(" CMD ", 1)[1].strip() if ins.keyword == "HEALTHCHECK" else ins.args
            try:
                _exec_form(args)
            except (ValueError, json.JSONDecodeError) as e:
                problems.append(f"{where}: {ins.keyword} exec form is not a JSON array of strings ({e})")
    if not stages:
        problems.append(f"{path.name}: no FROM")
    return {"problems": problems, "stages": stages, "global_args": global_args, "bases": bases,
            "instructions": len(instructions)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dockerfile", type=Path)
    ap.add_argument("--context", type=Path)
    ap.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE")
    a = ap.parse_args(argv)
    args = dict(s.split("=", 1) for s in a.build_arg)
    report = check(a.dockerfile, a.context, args)
    print(json.dumps(report, indent=2))
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Prompt files shipped with the project: ``dataset.prompts=builtin:<name>[:<template>]``.

A builtin file (``eval/datasets/prompts/<name>.yaml``) holds ``descriptions`` (video name -> short content
description), ``templates`` (template name -> a string with one ``{}``) and ``default_template``; the prompt of a
video is ``templates[t].format(description)``. ``builtin:davis2017_val`` uses the default template,
``builtin:davis2017_val:anime`` another one; ``plain`` gives the description alone. A user's own prompts file (a
path) is read by :func:`eval.datasets.base.load_prompts` as before.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml

PREFIX = "builtin:"
PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"


def is_builtin(spec: object) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def available() -> list[str]:
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.yaml"))


def _closest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def load_builtin(spec: str) -> dict[str, str]:
    """``builtin:<name>[:<template>]`` -> {video name: prompt}; unknown names fail with the available ones."""
    parts = spec[len(PREFIX) :].split(":")
    if len(parts) > 2 or not parts[0]:
        raise ValueError(f"dataset.prompts={spec!r}: expected builtin:<name> or builtin:<name>:<template>")
    name = parts[0]
    path = PROMPTS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(
            f"dataset.prompts={spec!r}: no builtin prompt file {name!r}.{_closest(name, available())} "
            f"Available: {', '.join(available())}"
        )
    data = yaml.safe_load(path.read_text())
    templates: dict[str, str] = data["templates"]
    template = parts[1] if len(parts) == 2 else data["default_template"]
    if template not in templates:
        raise ValueError(
            f"dataset.prompts={spec!r}: no template {template!r} in {name}.{_closest(template, list(templates))} "
            f"Available: {', '.join(templates)}"
        )
    fmt = templates[template]
    return {str(video): fmt.format(desc) for video, desc in data["descriptions"].items()}


def describe(name: str) -> dict:
    """The raw file: descriptions, templates and the default template (for docs and tests)."""
    return yaml.safe_load((PROMPTS_DIR / f"{name}.yaml").read_text())

"""Rendering recipe templates with Jinja2: sandboxed, StrictUndefined, no autoescaping.

A recipe may come from the user's directory, so templates run in Jinja2's
sandbox; an undefined variable is an error naming the template, never an empty string.
"""

from __future__ import annotations

import base64
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cm.errors import ConfigError

if TYPE_CHECKING:
    from cm.recipes import Recipe


def _b64(value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else value
    return base64.b64encode(data).decode()


@lru_cache(maxsize=16)
def _environment(directory: Path) -> Any:
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(loader=jinja2.FileSystemLoader(str(directory)), undefined=jinja2.StrictUndefined,
                               autoescape=False, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["b64encode"] = _b64
    env.filters["tojson"] = lambda v: json.dumps(v)
    return env


def render(recipe: Recipe, template: str, context: dict[str, Any]) -> str:
    """Render the template file ``template`` of ``recipe``."""
    import jinja2

    try:
        return _environment(recipe.directory).get_template(template).render(**context)
    except jinja2.TemplateError as exc:
        line = getattr(exc, "lineno", None) or _template_line(exc, str(recipe.directory / template))
        where = f" line {line}" if line else ""
        raise ConfigError(f"{recipe.directory / template}{where}: {exc.message or exc}") from None


def _template_line(exc: BaseException, path: str) -> int | None:
    """The template's line a render-time error came from (Jinja2 puts template frames in the traceback)."""
    tb, line = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render_string(recipe: Recipe, key: str, text: str, context: dict[str, Any]) -> str:
    """Render one short template held in the recipe itself (an output)."""
    import jinja2

    try:
        return _environment(recipe.directory).from_string(text).render(**context).strip()
    except jinja2.TemplateError as exc:
        raise ConfigError(f"{recipe.path}: key '{key}': {exc.message or exc}") from None

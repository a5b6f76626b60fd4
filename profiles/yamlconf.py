"""Load a YAML file into a pydantic model, reporting every error at once with file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from profiles.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int:
    """1-based line of the YAML node at `loc`, or of its deepest existing ancestor."""
    if node is None:
        return 1
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if str(key_node.value) == str(part):
                    child = value_node
                    line = key_node.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def locate(path: Path, loc: tuple[int | str, ...]) -> int:
    """1-based line of the value at `loc` in the YAML file `path` (1 if it cannot be read).

    For errors found after loading, e.g. by a validator that only runs on part of the file.
    """
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return 1
    return _line_of(root, loc)


def dotted(loc: tuple[int | str, ...]) -> str:
    """`loc` as a reader writes it: `enrichment.providers[0].auth.header`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_yaml_model(path: Path, model: type[M], context: dict[str, Any] | None = None) -> M:
    """Parse `path` and validate it as `model`; raise ConfigError listing every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [f"{path}: file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"{path}: cannot read ({type(exc).__name__})"]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(str(path), [f"{where}: YAML syntax error: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), [f"{path}: YAML error: {exc}"]) from None
    if data is None:
        data = {}
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = tuple(err["loc"])
            problems.append(f"{path}:{_line_of(root, loc)}: {dotted(loc)}: {err['msg']}")
        raise ConfigError(str(path), problems) from None


def validate_section(raw: Any, model: type[M], *, section: str, path: Path) -> M:
    """Validate one section of an already loaded YAML file (`path`) as `model`; ConfigError
    lists every problem as `file:line: section.field: message`."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = (section, *err["loc"])
            problems.append(f"{path}:{locate(path, loc)}: {dotted(loc)}: {err['msg']}")
        raise ConfigError(str(path), problems) from None

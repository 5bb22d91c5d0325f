"""``serlens config schema``: every run-config key with its type, default, bounds and description.

Read from the pydantic models themselves (``StudyArgs`` and each service's ``Args``), so the
listing cannot drift from what ``load_study_args`` accepts.
"""

from __future__ import annotations

import json
import textwrap
import types
import typing
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from serlens.pipeline.config import StudyArgs

#: pydantic's bound constraints, as they read in the listing.
_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "length >=", "max_length": "length <="}


@dataclass(frozen=True)
class ConfigKey:
    """One key of the run config.

    Attributes:
        key: its dotted name, as ``--set`` takes it (``train.lr``).
        type: its type, readable (``int``, ``float | None``, ``one of: demo, crema-d``).
        default: its default value (JSON-compatible).
        bounds: its bounds, readable (``>= 1``), or empty.
        description: what it means.
    """

    key: str
    type: str
    default: Any
    bounds: str
    description: str


def type_name(annotation: Any) -> str:
    """A readable name of a field's type: ``int``, ``list[str]``, ``one of: a, b``, ``float | None``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(field: FieldInfo) -> str:
    found = []
    for item in field.metadata:
        for name, sign in _BOUNDS.items():
            value = getattr(item, name, None)
            if value is not None:
                found.append(f"{sign} {value}")
    return ", ".join(found)


def _sections(model: type[BaseModel], prefix: str = "") -> list[ConfigKey]:
    keys: list[ConfigKey] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(_sections(annotation, f"{prefix}{name}."))
            continue
        default = field.get_default(call_default_factory=True)
        keys.append(ConfigKey(
            key=f"{prefix}{name}", type=type_name(annotation), default=json.loads(json.dumps(default, default=str)),
            bounds=_bounds(field), description=field.description or "",
        ))
    return keys


def config_keys() -> list[ConfigKey]:
    """Every key of the run config, section by section, in the order of the models."""
    return _sections(StudyArgs)


def section_summaries() -> dict[str, str]:
    """Each section's name and its description."""
    return {name: field.description or "" for name, field in StudyArgs.model_fields.items()}


def schema_json() -> str:
    """The keys as a JSON list of ``{key, type, default, bounds, description}``."""
    return json.dumps([asdict(k) for k in config_keys()], indent=2) + "\n"


def schema_text(width: int = 100) -> str:
    """The keys as text: one block per section, each key with type, default, bounds and meaning."""
    summaries = section_summaries()
    lines: list[str] = []
    section = None
    for key in config_keys():
        head = key.key.split(".", 1)[0]
        if head != section:
            section = head
            lines += ["", f"{section}:  {summaries.get(section, '')}".rstrip()]
        bounds = f", {key.bounds}" if key.bounds else ""
        lines.append(f"  {key.key}  ({key.type}{bounds}; default: {json.dumps(key.default)})")
        lines += textwrap.wrap(key.description, width, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines).lstrip("\n") + "\n"

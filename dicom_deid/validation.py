"""What the node config (config.py) and the profile files (header/profile.py) share to
report a pydantic validation: one line per problem, `key.path[i].key: problem`, every problem
at once, with a "did you mean" hint for an unknown key."""

from __future__ import annotations

import difflib
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError


def fail(message: str, at: str = "") -> PydanticCustomError:
    """A problem worded as the operator reads it; ``at`` names a key below the one validated
    (a check that spans fields reports on the key to change; '[i].key' for a list item)."""
    return PydanticCustomError("config", "{message}", {"message": message, "at": at})


def kind(value: Any) -> str:
    """A value as a problem line shows it."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{value!r} ({type(value).__name__})"


def strict_bool(value: Any) -> bool:
    """true or false, nothing that merely converts to one."""
    if not isinstance(value, bool):
        raise fail(f"must be true or false, got {kind(value)}")
    return value


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field's annotation holds (inside Optional, tuple, Annotated), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = model_in(arg)
        if found is not None:
            return found
    return None


def _keys_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[str, ...]:
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model else None
        model = model_in(field.annotation) if field else None
        if model is None:
            return ()
    return tuple(model.model_fields) if model else ()


def key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":             # pydantic's marker for a bad mapping key
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def problems(error: ValidationError, root: type[BaseModel]) -> list[str]:
    """One `path: problem` line per error of a validation against root."""
    lines = []
    for err in error.errors(include_url=False):
        loc = tuple(err["loc"])
        ctx = err.get("ctx") or {}
        path = key_path(loc)
        at = ctx.get("at", "")
        if at:
            path = f"{path}{at}" if at.startswith("[") else (f"{path}.{at}" if path else at)
        if err["type"] == "config":
            message = ctx["message"]
        elif err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _keys_at(root, loc[:-1]), n=1)
            message = "unknown key" + (f" (did you mean '{close[0]}'?)" if close else "")
        elif err["type"] == "missing":
            message = "is required"
        elif err["type"] == "literal_error":
            message = f"must be {ctx.get('expected')}, got {err['input']!r}"
        else:
            message = err["msg"]
        lines.append(f"{path or '(top level)'}: {message}")
    return lines

"""Typed configuration from environment variables.

Each service describes its settings as one frozen dataclass whose fields carry attribute
docstrings (unit and default). :func:`load_config` fills it from ``<PREFIX>__<FIELD>`` variables,
with ``__`` nesting into nested dataclasses, the same convention as Orthanc's
``ORTHANC__SECTION__KEY``::

    DICOMLAB_PROXY__ORTHANC__URL=http://orthanc:8042
    DICOMLAB_PROXY__ALLOWED_ORIGINS=https://labeling.example.org,https://s3.amazonaws.com

A field without a default is required; a missing or malformed value raises :class:`ConfigError`
naming the variable and what was expected. Secrets are typed :class:`Secret` so they never print.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import itertools
import os
import textwrap
import types
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

from dicomlab_core.errors import ConfigError

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Secret:
    """A string that never shows itself in ``repr``/``str``/logs; call :meth:`reveal` to use it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value, for the one place that needs it."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('****')" if self._value else "Secret('')"

    __str__ = __repr__


def env_name(prefix: str, *path: str) -> str:
    """The environment variable for a field path: ``env_name("DICOMLAB_PROXY", "orthanc", "url")``."""
    return "__".join([prefix, *(p.upper() for p in path)])


def load_config(cls: type[T], prefix: str, environ: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` (a dataclass) from ``environ`` (default ``os.environ``) under ``prefix``."""
    env = os.environ if environ is None else environ
    return _load(cls, prefix, (), env)


def _load(cls: type[T], prefix: str, path: tuple[str, ...], env: Mapping[str, str]) -> T:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        field_path = (*path, f.name)
        hint = hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            values[f.name] = _load(hint, prefix, field_path, env)
            continue
        name = env_name(prefix, *field_path)
        raw = env.get(name)
        if raw is None:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{name} is required ({_describe_type(hint)}) but not set")
            continue
        try:
            values[f.name] = _parse(hint, raw)
        except (ValueError, TypeError) as exc:
            shown = "****" if _is_secret(hint) else repr(raw)
            raise ConfigError(f"{name}={shown} is invalid: expected {_describe_type(hint)} ({exc})") from None
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as exc:
            raise ConfigError(f"{prefix}: {exc}") from None
    return obj


def _is_secret(hint: Any) -> bool:
    return hint is Secret or (get_origin(hint) in (Union, types.UnionType) and Secret in get_args(hint))


def _parse(hint: Any, raw: str) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if raw == "" and type(None) in get_args(hint):
            return None
        return _parse(args[0], raw)
    if origin is tuple:
        (item, *_rest) = get_args(hint)
        return tuple(_parse(item, part.strip()) for part in raw.split(",") if part.strip())
    if hint is bool:
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError("not a boolean")
    if hint is int:
        return int(raw)
    if hint is float:
        return float(raw)
    if hint is Path:
        return Path(raw)
    if hint is Secret:
        return Secret(raw)
    if hint is str:
        return raw
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(raw)
        except ValueError:
            raise ValueError(f"one of {', '.join(str(m.value) for m in hint)}") from None
    raise TypeError(f"unsupported config type {hint!r}")


def _describe_type(hint: Any) -> str:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        return f"{_describe_type(args[0])}, optional"
    if origin is tuple:
        return f"comma-separated list of {_describe_type(get_args(hint)[0])}"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + "|".join(str(m.value) for m in hint)
    names = {bool: "boolean (true/false)", int: "integer", float: "number", str: "string",
             Path: "path", Secret: "secret string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


@cache
def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal right after each field)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    tree = ast.parse(source)
    docs: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, following in itertools.pairwise(body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    """One row of the configuration reference."""

    env: str
    type: str
    default: str
    required: bool
    doc: str


def describe_config(cls: type, prefix: str, path: tuple[str, ...] = ()) -> list[FieldDoc]:
    """The configuration reference for ``cls``: every variable, its type, default and docstring."""
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    rows: list[FieldDoc] = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            rows.extend(describe_config(hint, prefix, (*path, f.name)))
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required:
            default = ""
        else:
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc,operator]
            default = _show_default(value)
        rows.append(FieldDoc(env_name(prefix, *path, f.name), _describe_type(hint), default, required,
                             docs.get(f.name, "")))
    return rows


def _show_default(value: Any) -> str:
    if isinstance(value, Secret):
        return "****" if value else ""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def masked(config: Any) -> dict[str, Any]:
    """``config`` as a dict safe to log: secrets masked, nested dataclasses flattened to dicts."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out[f.name] = masked(value)
        elif isinstance(value, Secret):
            out[f.name] = "****" if value else ""
        elif isinstance(value, Path):
            out[f.name] = str(value)
        elif isinstance(value, enum.Enum):
            out[f.name] = value.value
        elif isinstance(value, tuple):
            out[f.name] = ["****" if isinstance(v, Secret) else v.value if isinstance(v, enum.Enum) else v
                           for v in value]
        else:
            out[f.name] = value
    return out

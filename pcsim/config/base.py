"""What every config section shares: times with units, the frozen, strict section, and a
YAML reader that refuses a key written twice."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo, field_validator

from pcsim.units import parse_quantity

__all__ = ["Seconds", "Section", "read_small_text", "read_yaml", "refuse_bool"]

#: The most a config or profile file may hold (a path to ``/dev/zero`` must not fill memory).
MAX_TEXT_BYTES = 1 << 20


def _seconds(value):
    return parse_quantity(value, "s")


#: A time in seconds, written in YAML as "10 ms", "inf" or a bare number of seconds.
Seconds = Annotated[float, BeforeValidator(_seconds)]


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, except that a mapping with a key written twice is an error
    (plain YAML keeps the last one silently)."""


def _unique_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            line = key_node.start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is written twice (lines {seen[key]} and {line}); "
                "keep one", key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_small_text(path) -> str:
    """A text file of at most :data:`MAX_TEXT_BYTES`; ``OSError`` if it cannot be read,
    ``ValueError`` if it is larger or not UTF-8."""
    with open(path, "rb") as f:
        raw = f.read(MAX_TEXT_BYTES + 1)
    if len(raw) > MAX_TEXT_BYTES:
        raise ValueError(f"larger than {MAX_TEXT_BYTES >> 20} MiB: not a pcsim file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not a text file (expected UTF-8 YAML)") from None


def read_yaml(text: str) -> Any:
    """Parse YAML as ``yaml.safe_load`` does, refusing duplicate keys."""
    return yaml.load(text, Loader=_UniqueKeys)  # noqa: S506 (a SafeLoader subclass)


def _takes_bool(annotation) -> bool:
    """Whether a field of this type may hold ``True``/``False`` (bool itself, a Literal of
    them, Any, or a union with one of those)."""
    if annotation is bool or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _takes_bool(typing.get_args(annotation)[0])
    if origin is Literal:
        return any(isinstance(a, bool) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return any(_takes_bool(a) for a in typing.get_args(annotation))
    return False


def _item_type(annotation):
    """The element type of a list or tuple field (through Optional), else None."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _item_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        items = [_item_type(a) for a in typing.get_args(annotation)]
        return next((i for i in items if i is not None), None)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return args[0] if args else None
    return None


def refuse_bool(model: type[BaseModel], value, info: ValidationInfo):
    """A before-validator for every field: ``true``/``false`` where a number or a name is
    expected is an error (pydantic's lax mode would read ``size: true`` as 1)."""
    annotation = model.model_fields[info.field_name].annotation
    if isinstance(value, bool) and not _takes_bool(annotation):
        raise ValueError("expected a number or a name, got a boolean")
    item = _item_type(annotation)
    if (item is not None and isinstance(value, (list, tuple)) and not _takes_bool(item)
            and any(isinstance(v, bool) for v in value)):
        raise ValueError("expected numbers or names in the list, got a boolean")
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value, info: ValidationInfo):
        return refuse_bool(cls, value, info)

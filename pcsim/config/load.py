"""Read an experiment YAML file into a validated :class:`ExperimentConfig`."""

from __future__ import annotations

import copy
import difflib
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import BaseModel, ValidationError

from pcsim.config.base import read_small_text, read_yaml
from pcsim.config.schema import ExperimentConfig

__all__ = ["ConfigError", "load_config", "config_from_dict", "apply_overrides", "parse_override"]


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and the key."""


#: what a key with a pattern takes, in words (pydantic would print the regex)
_PATTERN_WORDS = {"device": "'auto', 'cpu', 'cuda' or 'cuda:N' (N a GPU index)",
                  "file": "a file name ending in .h5, without a folder"}


def _models(annotation) -> list:
    """The pydantic models an annotation can hold (through Optional, Union, list, dict)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _keys_at(loc) -> list:
    """The keys the config knows beside the last part of ``loc`` (list indices and
    pydantic's union tags skipped)."""
    models = [ExperimentConfig]
    for part in loc[:-1]:
        if isinstance(part, int) or not models:
            continue
        found = [m.model_fields[part].annotation for m in models if part in m.model_fields]
        if found:
            models = [m for a in found for m in _models(a)]
    return sorted({k for m in models for k in m.model_fields})


def _describe(error: Mapping[str, Any]) -> str:
    loc = ".".join(str(part) for part in error["loc"]) or "(top level)"
    msg = error["msg"]
    if error["type"] == "extra_forbidden":
        msg = "unknown key (not one pcsim knows; check its spelling)"
        close = difflib.get_close_matches(str(error["loc"][-1]), _keys_at(error["loc"]), n=1)
        if close:
            msg = f"unknown key; did you mean {close[0]!r}?"
    elif error["type"] == "string_pattern_mismatch" and error["loc"] \
            and error["loc"][-1] in _PATTERN_WORDS:
        msg = f"expected {_PATTERN_WORDS[error['loc'][-1]]}"
    elif error["type"] == "missing":
        msg = "required key is missing"
    got = ""
    if error["type"] not in ("missing",) and "input" in error and not isinstance(
            error["input"], (dict, list)):
        got = f" (got {error['input']!r})"
    return f"{loc}: {msg}{got}"


def config_from_dict(data: Any, source: str = "<dict>") -> ExperimentConfig:
    """Validate a plain mapping into an :class:`ExperimentConfig`.

    Raises
    ------
    ConfigError
        Naming ``source``, every offending key, and what was expected.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level, "
                          f"got {type(data).__name__}")
    try:
        return ExperimentConfig.model_validate(dict(data))
    except ValidationError as exc:
        lines = [_describe(err) for err in exc.errors()]
        more = f"\n  ({len(lines) - 1} more)\n  " + "\n  ".join(lines[1:]) if len(lines) > 1 else ""
        raise ConfigError(f"{source}: invalid configuration: {lines[0]}{more}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"learning.lr=0.01"`` into the dotted key and its YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. learning.lr=0.01")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return key.strip(), value


def apply_overrides(data: dict, overrides: Mapping[str, Any], source: str = "<dict>") -> dict:
    """Return a copy of ``data`` with dotted keys (``network.layers.1.size``) replaced."""
    data = copy.deepcopy(data)
    for key, value in overrides.items():
        parts = key.split(".")
        node: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"{source}: override {key}: {where} is not an index "
                                      f"of a list of {len(node)}")
                part = int(part)
            elif not isinstance(node, dict):
                raise ConfigError(f"{source}: override {key}: {where} is not a section")
            if last:
                node[part] = value
            else:
                if isinstance(node, dict) and part not in node:
                    node[part] = {}
                node = node[part]
    return data


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Load, override and validate an experiment file.

    Parameters
    ----------
    path : str or Path
        A YAML file under ``networks/``.
    overrides : mapping, optional
        Dotted keys to replace before validation (``{"learning.epochs": 1}``).

    Raises
    ------
    ConfigError
        If the file is missing or is not YAML, or any key is unknown, mistyped or out
        of range; the message names the file and the key.
    """
    path = Path(path)
    try:
        text = read_small_text(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        data = read_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if overrides and isinstance(data, dict):
        data = apply_overrides(data, overrides, str(path))
    return config_from_dict(data, str(path))

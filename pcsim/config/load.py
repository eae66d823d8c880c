"""Read an experiment YAML file into a validated :class:`ExperimentConfig`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import ValidationError

from pcsim.config.base import read_small_text, read_yaml
from pcsim.config.schema import ExperimentConfig

__all__ = ["ConfigError", "load_config", "config_from_dict", "apply_overrides", "parse_override"]


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and the key."""


def _describe(error: Mapping[str, Any]) -> str:
    loc = ".".join(str(part) for part in error["loc"]) or "(top level)"
    msg = error["msg"]
    if error["type"] == "extra_forbidden":
        msg = "unknown key (not one pcsim knows; check its spelling)"
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
        raise ConfigError(f"{source}: invalid configuration:\n  " + "\n  ".join(lines)) from None


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

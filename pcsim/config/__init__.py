"""Experiment configuration: schema and YAML loading (no torch, no brian2)."""

from pcsim.config.load import ConfigError, apply_overrides, config_from_dict, load_config
from pcsim.config.schema import ExperimentConfig

__all__ = ["ConfigError", "ExperimentConfig", "apply_overrides", "config_from_dict", "load_config"]

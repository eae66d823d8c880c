"""pcsim: a neuromorphic-style simulator of predictive-coding networks.

``import pcsim`` loads no backend; the engines import torch (or brian2) when built.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load_config", "run_experiment"]


def __getattr__(name):
    if name == "load_config":
        from pcsim.config import load_config
        return load_config
    if name == "run_experiment":
        from pcsim.experiment import run_experiment
        return run_experiment
    raise AttributeError(f"module 'pcsim' has no attribute {name!r}")

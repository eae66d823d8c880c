"""How the network is simulated: engines and their registry."""

from pcsim.engines.base import ENGINES, StepHook, get_engine_class

__all__ = ["ENGINES", "StepHook", "get_engine_class"]

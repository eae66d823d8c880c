"""Observers of a simulation: they record, and never change, what engines do."""

from pcsim.monitors.counters import OpCounter, OpCounts

__all__ = ["OpCounter", "OpCounts"]

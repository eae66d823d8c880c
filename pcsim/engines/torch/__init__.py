"""The torch engines (the only modules that import torch for simulation)."""

from pcsim.engines.torch import conv  # noqa: F401  (registers the convolutional map kinds)

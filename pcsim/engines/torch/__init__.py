"""The torch engines (the only modules that import torch for simulation)."""

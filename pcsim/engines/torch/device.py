"""Where a torch trainer computes: ``run.device`` resolved against what torch sees."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str) -> torch.device:
    """Map ``"auto"`` to CUDA when present, else CPU; refuse CUDA when absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but torch sees no CUDA device; "
                           "use --device cpu (or auto)")
    return torch.device(name)

"""The named parameter store of a torch trainer.

Every learned tensor has one name: ``W_l``, ``b_l`` (the tensors projection ``l``'s map
kind declares), and per layer the tensors of a learned precision (``log_sigma2_l``, ...).
The store draws them from one seed, hands each map and each precision its own, lists
them for an optimizer (projections in order, then layers), writes and reads the
checkpoint form with a finiteness guard; :func:`flatten_named` makes one flat view of
gradients by name for a single all-reduce.

Learned per-layer precisions (their classes, floor and guard) live in
:mod:`pcsim.engines.torch.precisions`; the store holds their tensors like any other.
"""

from __future__ import annotations

from typing import Iterator

import torch

from pcsim.engines.torch.maps import map_class
from pcsim.engines.torch.precisions import precision_class

__all__ = ["ParamStore", "StoreOwner", "store_name", "flatten_named", "unflatten_named"]

def store_name(local: str, index: int) -> str:
    """The store's name of tensor ``local`` of projection or layer ``index`` (``W_2``)."""
    return f"{local}_{index}"



class ParamStore:
    """Named learned tensors of ``network``, in optimizer order.

    Parameters
    ----------
    network : pcsim.model.Network
    tensors : dict of str -> tensor
        Every tensor the network's projections and learned precisions declare.
    """

    def __init__(self, network, tensors: dict):
        self.network = network
        self._tensors = dict(tensors)
        self._owners = {}  # name -> ("projection" | "layer", index, local name)
        for p in network.projections:
            for local in self._local_names_of_projection(p):
                self._owners[store_name(local, p.index)] = ("projection", p.index, local)
        for layer in network.layers:
            for local in self._local_names_of_layer(layer):
                self._owners[store_name(local, layer.index)] = ("layer", layer.index, local)
        if list(self._owners) != list(self._tensors):
            raise ValueError(f"the tensors {list(self._tensors)} are not the network's "
                             f"{list(self._owners)}")

    @staticmethod
    def _local_names_of_projection(p):
        return list(p.tensors)

    @staticmethod
    def _local_names_of_layer(layer):
        if layer.precision is None:
            return []
        return list(precision_class(layer).init_tensors(layer))

    @classmethod
    def initial(cls, network, init: str, seed: int, device, dtype) -> "ParamStore":
        """Draw every tensor from an explicit seed: on the CPU in float64, then cast, so
        CPU and CUDA runs, and float32 and float64 runs, start from the same weights."""
        generator = torch.Generator().manual_seed(seed)
        tensors = {}
        for p in network.projections:
            for local, t in map_class(p.kind).init_tensors(p, init, generator).items():
                tensors[store_name(local, p.index)] = t
        for layer in network.layers:
            if layer.precision is not None:
                kind = precision_class(layer)
                for local, t in kind.init_tensors(layer).items():
                    tensors[store_name(local, layer.index)] = t
        return cls(network, {k: t.to(device=device, dtype=dtype) for k, t in tensors.items()})

    # ------------------------------------------------------------------ access
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def __contains__(self, name) -> bool:
        return name in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def items(self):
        return self._tensors.items()

    def parameters(self) -> list[torch.Tensor]:
        """Every tensor, projections in order (``W_1, b_1, ..., W_L, b_L``), then layers."""
        return list(self._tensors.values())

    def _owned(self, kind, index) -> dict:
        return {local: self._tensors[name] for name, (k, i, local) in self._owners.items()
                if k == kind and i == index}

    def projection(self, l: int) -> dict:
        """Projection ``l``'s tensors by their local names (``{"W": ..., "b": ...}``)."""
        return self._owned("projection", l)

    def layer(self, l: int) -> dict:
        """Layer ``l``'s learned tensors by their local names."""
        return self._owned("layer", l)

    def names_of(self, kind: str, index: int) -> list[str]:
        """Store names of what projection (``kind="projection"``) or layer ``index`` owns."""
        return [name for name, (k, i, _) in self._owners.items() if k == kind and i == index]

    def clone(self) -> "ParamStore":
        return ParamStore(self.network, {k: t.clone() for k, t in self._tensors.items()})

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """CPU copies by name, and the layers' fixed precisions (for the record)."""
        return {"tensors": {k: t.detach().cpu().clone() for k, t in self._tensors.items()},
                "prec": [layer.prec for layer in self.network.layers]}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Copy a checkpoint's tensors in place, refusing other names or shapes."""
        tensors = state["tensors"] if "tensors" in state else _legacy(state)
        if list(tensors) != list(self._tensors):
            raise ValueError(f"the checkpoint holds {list(tensors)}, the network "
                             f"{list(self._tensors)}")
        for name, new in tensors.items():
            t = self._tensors[name]
            if t.shape != new.shape:
                raise ValueError(f"checkpoint tensor {name} has shape {tuple(new.shape)}, "
                                 f"the network's {tuple(t.shape)}")
            t.copy_(new)

def flatten_named(tensors: dict) -> torch.Tensor:
    """One flat tensor of ``tensors`` (by name, in their order): one all-reduce, not one
    per tensor."""
    return torch.cat([t.reshape(-1) for t in tensors.values()])


def unflatten_named(flat: torch.Tensor, like: dict) -> dict:
    """The inverse of :func:`flatten_named`: views of ``flat`` by the names and shapes of
    ``like``."""
    out, offset = {}, 0
    for name, t in like.items():
        out[name] = flat[offset:offset + t.numel()].view_as(t)
        offset += t.numel()
    return out


def _legacy(state: dict) -> dict:
    """A checkpoint of the ``{"W": [...], "b": [...]}`` form, by name."""
    out = {}
    for l, (w, b) in enumerate(zip(state["W"], state["b"]), start=1):
        out[f"W_{l}"], out[f"b_{l}"] = w, b
    return out


class StoreOwner:
    """A trainer whose learned tensors are ``self.params`` (a :class:`ParamStore`)."""

    def parameters(self) -> list[torch.Tensor]:
        return self.params.parameters()

    def state_dict(self) -> dict:
        return self.params.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.params.load_state_dict(state)

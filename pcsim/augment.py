"""Augmentation of training batches (random crop with padding, horizontal flip), drawn
from a generator that depends only on ``(seed, epoch, batch)`` so that a resumed run
redraws exactly what it would have drawn."""

from __future__ import annotations

import hashlib
from typing import Callable, Optional

import torch

from pcsim.data import Dataset

__all__ = ["augment_generator", "augment_batch", "augment_train_batch"]


def augment_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    """The CPU generator that draws the augmentation of training batch ``batch`` (0-based)
    of ``epoch`` (1-based, as the training loop counts) in a run seeded ``seed``.

    Its state is a function of ``(seed, epoch, batch)`` only (a BLAKE2b hash of the three
    numbers seeds it), so a resumed run redraws exactly the augmentation it would have
    drawn, with nothing in the checkpoint, and the data-order generator is not touched."""
    key = b"".join(int(v).to_bytes(8, "little", signed=True) for v in (seed, epoch, batch))
    digest = hashlib.blake2b(key, digest_size=8, person=b"pcsim-augment").digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little"))


def augment_batch(x: torch.Tensor, image_shape: tuple, *, crop_padding: int = 0,
                  hflip: bool = False, generator: Optional[torch.Generator] = None,
                  fill=0.0, positions: Optional[torch.Tensor] = None,
                  n_draw: Optional[int] = None) -> torch.Tensor:
    """Random crop with padding and random horizontal flip of a flat batch.

    ``x`` is (B, C*H*W) in channel-major order; the result has the same shape, dtype and
    device. Each image is padded by ``crop_padding`` pixels on every side with ``fill``
    (a number, or one value per channel) and cropped back to (H, W) at an offset
    ``(dy, dx)`` drawn uniformly from ``0..2*crop_padding``: output pixel ``(i, j)`` is
    padded pixel ``(i + dy, j + dx)``, i.e. input pixel ``(i + dy - p, j + dx - p)``. With
    ``hflip`` each cropped image is then mirrored left-right with probability 1/2
    (torchvision's ``RandomCrop(H, padding=p)`` then ``RandomHorizontalFlip()``). One
    gather, no per-sample loop. With neither, ``x`` itself is returned.

    Draws, on ``generator`` (CPU) and in this order: offsets ``randint(0, 2p+1, (n, 2))``
    (if ``crop_padding``), then flips ``randint(0, 2, (n,))`` (if ``hflip``), for ``n =
    n_draw`` samples (default B); sample ``b`` of ``x`` takes draw ``positions[b]``
    (default ``b``). A data-parallel shard passes its positions in the global batch, so
    each image gets the same augmentation on any number of processes.
    """
    p = int(crop_padding)
    if p < 0:
        raise ValueError(f"crop_padding must be >= 0, got {p}")
    if p == 0 and not hflip:
        return x
    if image_shape is None or len(image_shape) != 3:
        raise ValueError(f"augmentation needs an image shape (C, H, W), got {image_shape}")
    c, h, w = image_shape
    b = x.shape[0]
    n = b if n_draw is None else int(n_draw)
    if positions is None:
        positions = torch.arange(b)
    if len(positions) != b:
        raise ValueError(f"{len(positions)} positions for a batch of {b}")
    offsets = (torch.randint(0, 2 * p + 1, (n, 2), generator=generator) if p
               else torch.zeros(n, 2, dtype=torch.long))
    flips = (torch.randint(0, 2, (n,), generator=generator).bool() if hflip
             else torch.zeros(n, dtype=torch.bool))
    positions = positions.cpu()
    offsets, flips = offsets[positions], flips[positions]
    hp, wp = h + 2 * p, w + 2 * p
    rows = offsets[:, :1] + torch.arange(h)  # (B, H): padded row of output row i
    cols = offsets[:, 1:] + torch.arange(w)  # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    index = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).to(x.device)
    images = x.reshape(b, c, h, w)
    if p:
        padded = x.new_empty(b, c, hp, wp)
        padded.copy_(torch.as_tensor(fill, dtype=x.dtype, device=x.device)
                     .reshape(-1, 1, 1).expand(c, hp, wp))
        padded[:, :, p:p + h, p:p + w] = images
    else:
        padded = images
    out = padded.reshape(b, c, hp * wp).gather(2, index.expand(b, c, h * w))
    return out.reshape(b, c * h * w)


def _black(data: Dataset) -> torch.Tensor:
    """Per channel, the value a black pixel has in ``data``: ``(0 - mean) / std`` computed
    in float32 as the data were standardised, or 0 for unnormalised data."""
    c = data.image_shape[0]
    if data.mean is None:
        return torch.zeros(c)
    mean = torch.tensor(data.mean, dtype=torch.float32)
    return (torch.zeros(c) - mean) / torch.tensor(data.std, dtype=torch.float32)


def augment_train_batch(config, data: Dataset, images: torch.Tensor, epoch: int, batch: int,
                        n_global: Optional[int] = None,
                        shard: Optional[Callable] = None) -> torch.Tensor:
    """Apply ``config.data.augment`` to the training batch ``batch`` of ``epoch``.

    The padding is black (pixel value 0 before normalisation), as torchvision's
    ``RandomCrop(padding=p)`` pads the raw image before ``Normalize``; in pcsim's
    standardised space that is ``-mean/std`` per channel, not 0. The draws come from
    :func:`augment_generator` ``(learning.seed, epoch, batch)`` over the ``n_global``
    samples of the whole batch; ``shard`` (the data-parallel shard of an index tensor)
    picks this process's samples. Returns ``images`` unchanged when augmentation is off.
    """
    aug = config.data.augment
    if not aug.crop_padding and not aug.hflip:
        return images
    n = len(images) if n_global is None else n_global
    positions = torch.arange(n) if shard is None else shard(torch.arange(n))
    return augment_batch(images, data.image_shape, crop_padding=aug.crop_padding,
                         hflip=aug.hflip,
                         generator=augment_generator(config.learning.seed, epoch, batch),
                         fill=_black(data), positions=positions, n_draw=n)

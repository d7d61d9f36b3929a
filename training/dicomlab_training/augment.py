"""Batched augmentation of small cached images, on the GPU when there is one.

One affine warp per batch (``affine_grid`` + ``grid_sample``) applies a small rotation (configured in
DEGREES and converted to radians here — MONAI's ``RandRotate(range_x=15)`` means 15 radians), a zoom
and a shift; then brightness and contrast. There is no left/right flip: chest anatomy is not
symmetric (heart on the left, situs inversus exists and must stay recognizable).

Random parameters are drawn on the CPU from a generator seeded by (seed, epoch, step) for the whole
global batch, and each rank/micro-batch takes the rows of its own samples. So a run resumed at any
step, or split over several processes, augments every sample exactly as an uninterrupted
single-process run would.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F  # noqa: N812

from dicomlab_training.config import AugmentConfig

PARAMS = 6
"""angle (radians), scale, shift x, shift y, brightness, contrast."""


def batch_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """A CPU generator for one global batch, independent of device and of what ran before."""
    generator = torch.Generator()
    generator.manual_seed((seed * 1_000_003 + epoch * 10_007 + step) % (2**63 - 1))
    return generator


def random_params(n: int, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """``n × 6`` parameters, uniform within the configured ranges."""
    u = torch.rand((n, PARAMS), generator=generator, dtype=torch.float64) * 2 - 1  # [-1, 1)
    params = torch.empty((n, PARAMS), dtype=torch.float32)
    params[:, 0] = (u[:, 0] * math.radians(config.rotate_degrees)).float()
    params[:, 1] = (1 + u[:, 1] * config.scale).float()
    params[:, 2] = (u[:, 2] * config.translate * 2).float()  # affine_grid spans [-1, 1]: 2 = image side
    params[:, 3] = (u[:, 3] * config.translate * 2).float()
    params[:, 4] = (u[:, 4] * config.brightness).float()
    params[:, 5] = (1 + u[:, 5] * config.contrast).float()
    return params


def affine_grid(theta: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, 1, H, W), align_corners=False)`` computed separably (x and y terms
    broadcast), faster on a CPU than the batched matrix product (figures: ``benchmarks/results/README.md``)."""
    xs = (torch.arange(width, device=theta.device, dtype=theta.dtype) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=theta.device, dtype=theta.dtype) * 2 + 1) / height - 1
    grid = torch.empty((theta.shape[0], height, width, 2), device=theta.device, dtype=theta.dtype)
    for axis in (0, 1):
        a, b, c = (theta[:, axis, k] for k in range(3))
        rows = b[:, None] * ys[None, :] + c[:, None]
        grid[..., axis] = (a[:, None] * xs[None, :])[:, None, :] + rows[:, :, None]
    return grid


def apply(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Warp and adjust ``images`` (B × 1 × H × W, 0..1) with per-sample ``params`` (B × 6)."""
    params = params.to(device=images.device, dtype=torch.float32)
    angle, scale, tx, ty, brightness, contrast = params.unbind(dim=1)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    grid = affine_grid(torch.stack([torch.stack([cos, -sin, tx], dim=1), torch.stack([sin, cos, ty], dim=1)], dim=1),
                       images.shape[-2], images.shape[-1])
    source = images if images.dtype == torch.float32 else images.float()
    warped = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # contrast around each image's mean, then brightness: (x - m)·c + m + b = x·c + (m·(1 - c) + b)
    gain = contrast.view(-1, 1, 1, 1)
    offset = warped.mean(dim=(1, 2, 3), keepdim=True) * (1 - gain) + brightness.view(-1, 1, 1, 1)
    return torch.addcmul(offset, warped, gain).clamp_(0.0, 1.0).to(images.dtype)

"""Augmentation (degrees, no flip, determinism) and the sharded, resumable batch plan."""

from __future__ import annotations

import math

import numpy as np
import torch

from dicomlab_training import augment
from dicomlab_training.config import AugmentConfig
from dicomlab_training.data import EvalSampler, StepSampler


def test_rotation_is_in_degrees_and_bounded() -> None:
    config = AugmentConfig(rotate_degrees=7.0)
    params = augment.random_params(4000, config, augment.batch_generator(1, 0, 0))
    angles = params[:, 0].abs()
    assert float(angles.max()) <= math.radians(7.0) + 1e-6
    assert float(angles.max()) > math.radians(6.5)  # the full range is used, and it is not 7 radians
    assert float(params[:, 1].min()) >= 1 - config.scale - 1e-6 and float(params[:, 1].max()) <= 1 + config.scale + 1e-6


def test_warp_rotates_the_right_amount_and_never_mirrors() -> None:
    image = torch.zeros(1, 1, 33, 33)
    image[0, 0, 4:16, 19:24] = 1.0  # a vertical bar above and right of the centre
    quarter = torch.tensor([[math.pi / 2, 1.0, 0.0, 0.0, 0.0, 1.0]])
    turned = augment.apply(image, quarter)[0, 0]
    expected = torch.rot90(image[0, 0], k=1, dims=(0, 1))
    assert float((turned - expected).abs().mean()) < 0.02 or \
        float((turned - torch.rot90(image[0, 0], k=-1, dims=(0, 1))).abs().mean()) < 0.02
    small = augment.random_params(64, AugmentConfig(), augment.batch_generator(3, 1, 2))
    out = augment.apply(image.repeat(64, 1, 1, 1), small)
    mirrored = torch.flip(image, dims=(3,))
    # every augmented bar stays closer to the original than to its left/right mirror image
    for sample in out:
        assert float((sample - image[0]).abs().sum()) < float((sample - mirrored[0]).abs().sum())


def test_params_depend_only_on_seed_epoch_step() -> None:
    a = augment.random_params(8, AugmentConfig(), augment.batch_generator(5, 2, 9))
    torch.manual_seed(123)  # the global RNG must not matter
    b = augment.random_params(8, AugmentConfig(), augment.batch_generator(5, 2, 9))
    c = augment.random_params(8, AugmentConfig(), augment.batch_generator(5, 2, 10))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_ranks_and_micro_batches_share_out_the_same_global_batches() -> None:
    indices = np.arange(100, 150, dtype=np.int64)
    single = StepSampler(indices, 8, world=1, rank=0, micro_batches=1, seed=4)
    micro = StepSampler(indices, 8, world=1, rank=0, micro_batches=2, seed=4)
    ranks = [StepSampler(indices, 8, world=2, rank=r, micro_batches=1, seed=4) for r in range(2)]
    for sampler in (single, micro, *ranks):
        sampler.set_epoch(3)
    whole = list(single)
    assert len(whole) == 6 == single.steps_per_epoch  # 50 // 8, the remainder dropped
    by_rank = [list(s) for s in ranks]
    for step, batch in enumerate(whole):
        halves = list(micro)[step]
        assert sorted(halves) == sorted(batch)
        assert halves[:4] == by_rank[0][step] and halves[4:] == by_rank[1][step]  # micro j ≡ rank j
    seen = [i for batch in whole for i in batch]
    assert len(set(seen)) == len(seen)
    single.set_epoch(4)
    assert list(single) != whole  # a new permutation each epoch


def test_resume_starts_at_the_step() -> None:
    indices = np.arange(40, dtype=np.int64)
    sampler = StepSampler(indices, 4, world=1, rank=0, micro_batches=1, seed=1)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start_step=7)
    assert list(sampler) == full[7:] and len(sampler) == 3


def test_evaluation_shards_cover_every_sample_once() -> None:
    indices = np.arange(10, 33, dtype=np.int64)  # 23 samples over 2 and 3 ranks: not evenly divisible
    for world in (2, 3):
        shards = [EvalSampler(indices, 4, world=world, rank=r) for r in range(world)]
        seen = [i for shard in shards for batch in shard for i in batch]
        assert sorted(seen) == indices.tolist()

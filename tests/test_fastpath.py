"""The fast path's correctness, on small synthetic tensors: the resident loader visits every sample
exactly once per epoch (also across DDP ranks), normalises exactly like torchvision's
ToTensor + Normalize, augments without changing shape/dtype/range, and is reproducible."""

from __future__ import annotations

import pytest
import torch

from mnist_hpc.config import AugmentConfig
from mnist_hpc.training import data as datamod
from tests.paths import ROOT

MEAN, STD = 0.1307, 0.3081
AUG = AugmentConfig(shift=2.0, rotate=15.0, scale=0.1)


def images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.int64).to(torch.uint8)


def loader(n=103, bs=16, seed=0, augment=None, rank=0, world=1, shuffle=True, x=None, channels_last=False):
    x = images(n) if x is None else x
    y = torch.arange(len(x))  # the label is the sample's index: batches tell which samples they hold
    return datamod.ResidentLoader(
        x,
        y,
        batch_size=bs,
        mean=MEAN,
        std=STD,
        seed=seed,
        shuffle=shuffle,
        augment_cfg=augment,
        rank=rank,
        world_size=world,
        channels_last=channels_last,
    )


def epoch_batches(ld, epoch=0, start=0):
    return [(step, xb.clone(), yb.clone(), gs) for step, xb, yb, gs in ld.batches(epoch, start)]


# --------------------------------------------------------------------------- coverage


@pytest.mark.parametrize("n,bs", [(103, 16), (96, 16), (5, 8), (64, 64)])
@pytest.mark.parametrize("augment", [None, AUG])
def test_each_sample_exactly_once_per_epoch(n, bs, augment):
    ld = loader(n, bs, augment=augment)
    for epoch in range(3):
        seen = torch.cat([yb for _, _, yb, _ in epoch_batches(ld, epoch)])
        assert sorted(seen.tolist()) == list(range(n))
        assert len(ld) == -(-n // bs)


@pytest.mark.parametrize("n,bs", [(103, 16), (96, 16), (50, 10)])
def test_two_ranks_shard_one_permutation(n, bs):
    r0, r1 = loader(n, bs, rank=0, world=2), loader(n, bs, rank=1, world=2)
    assert len(r0) == len(r1)
    for epoch in range(2):
        b0, b1 = epoch_batches(r0, epoch), epoch_batches(r1, epoch)
        s0 = torch.cat([yb for _, _, yb, _ in b0])
        s1 = torch.cat([yb for _, _, yb, _ in b1])
        assert not set(s0.tolist()) & set(s1.tolist()), "the ranks' shards overlap"
        assert sorted(s0.tolist() + s1.tolist()) == list(range(n))
        for (_, _, y0, g0), (_, _, y1, g1) in zip(b0, b1, strict=False):
            assert g0 == g1 == len(y0) + len(y1)  # both ranks agree on the global batch
            assert abs(len(y0) - len(y1)) <= 1
        # the union of the shards is the one-process batch, in order
        single = epoch_batches(loader(n, bs), epoch)
        for (_, _, y0, _), (_, _, y1, _), (_, _, ys, _) in zip(b0, b1, single, strict=False):
            assert torch.equal(torch.cat([y0, y1]), ys)


def test_a_last_batch_smaller_than_the_world_is_dropped_on_every_rank():
    n, bs, world = 33, 16, 2  # 2 full batches and one lonely sample
    shards = [loader(n, bs, rank=r, world=world) for r in range(world)]
    assert all(len(s) == 2 for s in shards)
    seen = torch.cat([yb for s in shards for _, _, yb, _ in epoch_batches(s)])
    assert len(seen) == 32 and len(set(seen.tolist())) == 32


def test_resuming_mid_epoch_gives_the_remaining_batches():
    ld = loader(103, 16, augment=AUG)
    full = epoch_batches(ld, 2)
    tail = epoch_batches(loader(103, 16, augment=AUG), 2, start=3)
    assert [s for s, *_ in tail] == [s for s, *_ in full[3:]]
    for (_, xa, ya, _), (_, xb, yb, _) in zip(full[3:], tail, strict=False):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


# --------------------------------------------------------------------------- normalisation


def test_normalisation_equals_torchvision_totensor_normalize():
    from PIL import Image
    from torchvision import transforms

    x = images(40, seed=3)
    x[0] = 0
    x[1] = 255
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    expected = torch.stack([tf(Image.fromarray(a.numpy(), mode="L")) for a in x])
    ld = loader(x=x, bs=16, shuffle=False)
    got = torch.cat([xb for _, xb, _, _ in epoch_batches(ld)])
    assert got.shape == expected.shape == (40, 1, 28, 28)
    assert got.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(datamod.normalize(x, MEAN, STD), expected, rtol=0, atol=1e-6)


def test_channels_last_batches_hold_the_same_values():
    a = torch.cat([xb for _, xb, _, _ in epoch_batches(loader(40, 16))])
    b_batches = epoch_batches(loader(40, 16, channels_last=True))
    assert all(xb.is_contiguous(memory_format=torch.channels_last) for _, xb, _, _ in b_batches)
    torch.testing.assert_close(torch.cat([xb for _, xb, _, _ in b_batches]), a, rtol=0, atol=0)


# --------------------------------------------------------------------------- augmentation


def test_augmented_batches_keep_shape_dtype_and_value_range():
    x = images(64, seed=5)
    plain = epoch_batches(loader(x=x, bs=32))
    aug = epoch_batches(loader(x=x, bs=32, augment=AUG))
    lo, hi = (0 - MEAN) / STD, (1 - MEAN) / STD
    for (_, xp, yp, _), (_, xa, ya, _) in zip(plain, aug, strict=False):
        assert xa.shape == xp.shape == (32, 1, 28, 28)
        assert xa.dtype == torch.float32
        assert torch.isfinite(xa).all()
        assert xa.min() >= lo - 1e-5 and xa.max() <= hi + 1e-5
        assert torch.equal(ya, yp)  # labels follow their images
        assert not torch.allclose(xa, xp)  # it did transform


def test_zero_augmentation_is_the_identity():
    x = images(16, seed=6)
    xf = x.unsqueeze(1).float() / 255
    out = datamod.augment(xf, shift=0, rotate=0, scale=0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, xf, rtol=0, atol=1e-5)


def test_pure_shift_moves_pixels_by_whole_pixels_at_most():
    """A shift of at most s pixels never moves mass farther than s pixels (centre of mass)."""
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 12:16, 12:16] = 1.0
    out = datamod.augment(x, shift=2, rotate=0, scale=0, generator=torch.Generator().manual_seed(1))
    grid = torch.arange(28.0)
    for img in out[:, 0]:
        m = img.sum()
        cy, cx = (img.sum(1) * grid).sum() / m, (img.sum(0) * grid).sum() / m
        assert abs(cy - 13.5) <= 2 + 1e-4 and abs(cx - 13.5) <= 2 + 1e-4


def test_hflip_mirrors_about_half_the_images_exactly_and_leaves_the_rest():
    x = images(200, seed=11).unsqueeze(1).float() / 255
    out = datamod.augment(
        x, shift=0, rotate=0, scale=0, hflip=True, generator=torch.Generator().manual_seed(2)
    )
    mirrored = (out - x.flip(-1)).abs().amax((1, 2, 3)) < 1e-5
    kept = (out - x).abs().amax((1, 2, 3)) < 1e-5
    assert bool((mirrored ^ kept).all())  # each image is either mirrored or untouched, exactly
    assert 60 < int(mirrored.sum()) < 140


def test_hflip_is_refused_for_digits_and_taken_for_clothes():
    from mnist_hpc.config import config_from_dict
    from mnist_hpc.errors import ConfigError

    with pytest.raises(ConfigError, match=r"data\.augment\.hflip: expected false for mnist"):
        config_from_dict({"data": {"dataset": "mnist", "augment": {"hflip": True}}})
    cfg = config_from_dict({"data": {"dataset": "fashion-mnist", "augment": {"hflip": True}}})
    assert cfg.data.augment.enabled


# --------------------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("augment", [None, AUG])
def test_same_seed_same_batches(augment):
    a = epoch_batches(loader(103, 16, seed=7, augment=augment), 1)
    b = epoch_batches(loader(103, 16, seed=7, augment=augment), 1)
    for (sa, xa, ya, ga), (sb, xb, yb, gb) in zip(a, b, strict=True):
        assert sa == sb and ga == gb
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


def test_epochs_and_seeds_change_the_order():
    ld = loader(103, 16, seed=7)
    orders = [torch.cat([yb for _, _, yb, _ in epoch_batches(ld, e)]) for e in range(3)]
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    other = torch.cat([yb for _, _, yb, _ in epoch_batches(loader(103, 16, seed=8), 0)])
    assert not torch.equal(orders[0], other)
    assert torch.equal(ld.order(0), loader(103, 16, seed=7).order(0))


def test_augmentation_differs_between_epochs_and_steps():
    x = images(32, seed=9)
    ld = loader(x=x, bs=32, augment=AUG, shuffle=False)
    e0 = epoch_batches(ld, 0)[0][1]
    e1 = epoch_batches(ld, 1)[0][1]
    assert not torch.allclose(e0, e1)


# --------------------------------------------------------------------------- the fast net


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"width": 8, "depth": 2},
        {"channels": [12, 24, 32], "head": "flatten"},
        {"width": 4, "depth": 4, "head": "flatten"},
        {"channels": [8, 16, 32], "head": "flatten", "downsample": "stride"},
        {"width": 4, "depth": 4, "downsample": "stride"},
        {"channels": [8, 16, 32], "convs": 2, "head": "flatten"},
        {"width": 4, "depth": 2, "convs": 3, "downsample": "stride"},
    ],
)
def test_fast_net_shapes(params):
    from mnist_hpc.config import config_from_dict
    from mnist_hpc.training.models import build_model

    cfg = config_from_dict({"model": {"name": "fast", **params}})
    m = build_model(cfg.model)
    out = m(torch.zeros(3, 1, 28, 28))
    assert out.shape == (3, 10)
    m = m.to(memory_format=torch.channels_last)
    x = torch.randn(3, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(x.contiguous()), rtol=1e-4, atol=1e-5)


def test_fast_configs_validate():
    from mnist_hpc.config import load_config

    root = ROOT / "configs"
    for name in ("fast.yaml", "fast995.yaml", "best.yaml"):
        cfg = load_config(root / name)
        assert cfg.data.val_split is None  # no per-epoch validation pass: the clock is training
        assert cfg.data.dataset == "mnist"


def test_loaded_split_equals_what_torchvision_reads(synth_root):
    from torchvision import datasets

    from mnist_hpc.config.datasets import DATASETS

    for train in (True, False):
        x, y = datamod.read_split(DATASETS["mnist"], synth_root, train)
        ds = datasets.MNIST(str(synth_root), train=train, download=False)
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        assert torch.equal(x, ds.data) and torch.equal(y, ds.targets.to(torch.int64))

"""Test weights: tie-free ones exactly representable in a dtype, and ones full of ties."""
import importlib.util
import os.path as osp

import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# Consecutive bit patterns this far apart give 128 distinct magnitudes per binade.
_BIT_STEP = {torch.float32: 1 << 16, torch.float16: 1 << 3, torch.bfloat16: 1}
_INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def distinct_weight(shape, dtype=torch.float32, seed=0):
    """Weights whose magnitudes are all different, exactly representable in ``dtype``.

    Magnitudes are consecutive (spaced) bit patterns from 2^-6 upwards, shuffled, with random
    signs, so no tie can come from rounding when they are computed in float32.
    """
    g = torch.Generator().manual_seed(seed)
    numel = 1
    for s in shape:
        numel *= s
    start = torch.tensor(2.0**-6, dtype=dtype).view(_INT_VIEW[dtype]).item()
    bits = start + torch.randperm(numel, generator=g) * _BIT_STEP[dtype]
    mags = bits.to(_INT_VIEW[dtype]).view(dtype)
    signs = (torch.randint(0, 2, (numel, ), generator=g) * 2 - 1).to(dtype)
    weight = (mags * signs).reshape(shape)
    assert torch.isfinite(weight).all() and weight.abs().unique().numel() == numel
    return weight


def tied_weight(shape, kind, seed=0):
    """Float32 weights full of ties: ``zeros``, ``repeated`` small integers, ``sparse``
    (80% zeros), ``constant`` (one value), or ``random`` (no deliberate ties)."""
    g = torch.Generator().manual_seed(seed)
    if kind == 'zeros':
        return torch.zeros(shape)
    if kind == 'repeated':
        return torch.randint(-2, 3, shape, generator=g).float()
    if kind == 'sparse':
        return torch.randn(shape, generator=g) * (torch.rand(shape, generator=g) < 0.2)
    if kind == 'constant':
        return torch.full(shape, -0.5)
    return torch.randn(shape, generator=g)


def resnet50_eligible_shapes(m=8):
    """The N:M-eligible ResNet-50 conv shapes, from ``benchmarks/mask_speed.py`` itself."""
    spec = importlib.util.spec_from_file_location(
        'mask_speed', osp.join(REPO, 'benchmarks', 'mask_speed.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.resnet50_eligible_shapes(m)

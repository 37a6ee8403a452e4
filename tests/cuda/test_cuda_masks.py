"""The masks on a CUDA GPU: the CPU's masks, no host sync, deterministic mode, async check.

Every test is marked ``cuda``; ``tests/conftest.py`` skips them where
``torch.cuda.is_available()`` is False (CI), so they show as skipped, never as passed.

Soft values: the selections (which weights are kept, the thresholds ``t``) are exact on both
devices, and so are the additions of ``1 + F + P``; only ``sigmoid`` is computed by different
code on the CPU and on CUDA (its ``exp`` may round differently in the last place), so the
MaxQ masks are compared bit for bit on their zeros and to within one float32 ulp of the mask
range on their values. The hard N:M masks are compared bit for bit.
"""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mmdet_maxq.sparsity import maxq_mask, nm_mask
from ..sparsity.weights import REPO, distinct_weight, resnet50_eligible_shapes, tied_weight

# (n, m, preserve): 2:4 fully sparse, 2:8 half way through the schedule, 1:16 at its start.
NM_PRESERVE = [(2, 4, 0.0), (2, 8, 0.5), (1, 16, 1.0)]
# One ulp at the top of the mask range [2, 3] (the values of 1 + F + P with P > 0).
ULP = 2 * torch.finfo(torch.float32).eps
LAYER = 'backbone.layer3.1.conv2'


def resnet50_weights(m, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=g) * 0.05).to(dtype) for s in resnet50_eligible_shapes(m)]


def tie_heavy_weights():
    shapes = [(64, 64, 3, 3), (256, 64, 1, 1), (32, 128)]
    weights = []
    for shape in shapes:
        weights += [tied_weight(shape, kind, seed=1) for kind in ('zeros', 'repeated', 'sparse')]
        weights += [torch.randn(shape).bfloat16(), distinct_weight(shape, seed=2)]
    return weights


def assert_same_masks(weight, n, m, preserve):
    """``weight`` (on the CPU) gives the same masks on the CPU and on CUDA."""
    gpu = weight.cuda()
    hard_cpu, hard_gpu = nm_mask(weight, n, m, preserve), nm_mask(gpu, n, m, preserve)
    assert hard_gpu.is_cuda and hard_gpu.dtype == weight.dtype
    assert torch.equal(hard_gpu.cpu(), hard_cpu), (tuple(weight.shape), n, m, preserve)
    soft_cpu, soft_gpu = maxq_mask(weight, n, m, preserve), maxq_mask(gpu, n, m, preserve)
    assert soft_gpu.is_cuda and soft_gpu.dtype == weight.dtype and soft_gpu.is_contiguous()
    soft_gpu = soft_gpu.cpu()
    assert torch.equal(soft_gpu == 0, soft_cpu == 0), (tuple(weight.shape), n, m, preserve)
    torch.testing.assert_close(soft_gpu.float(), soft_cpu.float(), rtol=0,
                               atol=max(ULP, 2 * torch.finfo(weight.dtype).eps))


@pytest.mark.cuda
@pytest.mark.parametrize('n, m, preserve', NM_PRESERVE)
def test_cuda_masks_equal_cpu_masks_on_every_resnet50_conv(n, m, preserve):
    for weight in resnet50_weights(m):
        assert_same_masks(weight, n, m, preserve)


@pytest.mark.cuda
@pytest.mark.parametrize('n, m, preserve', NM_PRESERVE)
def test_cuda_masks_equal_cpu_masks_with_ties(n, m, preserve):
    for weight in tie_heavy_weights():
        assert_same_masks(weight, n, m, preserve)
        folded = weight * nm_mask(weight, n, m)  # exactly N:M: ties at zero
        assert_same_masks(folded, n, m, preserve)


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_no_host_sync(dtype):
    """``torch.cuda.set_sync_debug_mode('error')`` raises on any synchronising call."""
    weights = [w.cuda() for w in resnet50_weights(8, dtype)]
    for n, m, preserve in NM_PRESERVE:  # warm-up: lazy CUDA init, kernel loading, allocator
        for weight in weights:
            maxq_mask(weight, n, m, preserve)
            nm_mask(weight, n, m, preserve)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        for n, m, preserve in NM_PRESERVE:
            for weight in weights:
                maxq_mask(weight, n, m, preserve, name=LAYER)
                nm_mask(weight, n, m, preserve, name=LAYER)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


@pytest.mark.cuda
def test_deterministic_algorithms_on_cuda():
    """MMEngine's ``randomness.deterministic=True``: no op may raise, masks unchanged."""
    cases = [(w, 2, 8, 0.5) for w in resnet50_weights(8, seed=3)]
    cases += [(w, 2, 4, 0.0) for w in tie_heavy_weights()]
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for weight, n, m, preserve in cases:
            assert_same_masks(weight, n, m, preserve)
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


@pytest.mark.cuda
@pytest.mark.parametrize('fn', ['maxq_mask', 'nm_mask'])
def test_non_finite_weight_raises_naming_the_layer(fn):
    """A NaN weight trips ``torch._assert_async``: a RuntimeError at the next sync.

    A device-side assert leaves the CUDA context unusable, so it runs in a subprocess. The
    device prints the assert message (naming the layer) with the failed assertion; the
    RuntimeError itself reports the device-side assert.
    """
    code = textwrap.dedent(f'''
        import torch
        from mmdet_maxq.sparsity import {fn}
        weight = torch.randn(64, 64, 3, 3, device='cuda')
        weight[3, 5, 1, 1] = float('nan')
        try:
            {fn}(weight, 2, 8, name={LAYER!r})
            torch.cuda.synchronize()
        except RuntimeError as error:
            print('RuntimeError:', error, flush=True)
        else:
            print('no error', flush=True)
    ''')
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert 'RuntimeError:' in proc.stdout, output
    assert LAYER in output and 'non-finite values' in output, output

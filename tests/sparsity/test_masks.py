import itertools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmdet_maxq.sparsity import is_nm_sparse, maxq_mask, nm_mask

from .spec_reference import spec_hard_mask, spec_maxq_mask

NM = [(1, 4), (2, 4), (2, 8), (4, 8), (1, 16)]


def distinct_weight(shape, dtype=torch.float32, seed=0):
    """Tie-free weights: a permutation of distinct magnitudes with random signs, exactly
    representable in ``dtype`` (multiples of 1/64 below 32 for the half types)."""
    g = torch.Generator().manual_seed(seed)
    numel = int(torch.tensor(shape).prod())
    mags = (torch.randperm(numel, generator=g).double() + 1) / 64
    signs = torch.randint(0, 2, (numel, ), generator=g).double() * 2 - 1
    return (mags * signs).reshape(shape).to(dtype)


SHAPES = [(4, 16, 1, 1), (3, 16, 3, 3), (2, 32, 5, 5), (2, 16, 7, 7), (5, 32)]


@pytest.mark.parametrize('shape, nm', [(s, nm) for s in SHAPES for nm in NM
                                       if s[1] % nm[1] == 0])
@pytest.mark.parametrize('preserve', [0.0, 0.3, 1.0])
def test_masks_equal_spec_on_tie_free_weights(shape, nm, preserve):
    n, m = nm
    w = distinct_weight(shape, seed=len(shape) + n + m)
    assert torch.equal(nm_mask(w, n, m, preserve), spec_hard_mask(w, n, m, preserve).float())
    torch.testing.assert_close(maxq_mask(w, n, m, preserve), spec_maxq_mask(w, n, m, preserve),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32])
def test_half_precision_weights(dtype):
    # Grouped conv: weight (8, 4, 3, 3) is 8 in-channels in 2 groups.
    w = distinct_weight((8, 4, 3, 3), dtype=torch.float32, seed=3)
    w = (w / 4).to(dtype)  # magnitudes up to 9, steps of 1/256: exact in bf16 needs <= 8 bits
    assert torch.unique(w.abs()).numel() == w.numel() or dtype == torch.bfloat16
    mask = maxq_mask(w, 2, 4, preserve=0.25)
    assert mask.dtype == dtype and mask.shape == w.shape
    want = spec_maxq_mask(w.float(), 2, 4, preserve=0.25)
    hard = nm_mask(w, 2, 4, preserve=0.25)
    assert torch.equal(hard.float(), spec_hard_mask(w.float(), 2, 4, 0.25).float())
    torch.testing.assert_close(mask.float(), want.to(dtype).float(), rtol=1e-2, atol=1e-2)


def test_maxq_values_and_structure():
    w = distinct_weight((8, 32, 3, 3), seed=1)
    s = maxq_mask(w, 2, 8)
    kept = s[s > 0]
    assert kept.min() >= 1 and kept.max() <= 3
    assert torch.equal(s > 0, nm_mask(w, 2, 8) > 0)
    assert (kept > 2).any()  # both axis queries boost some weights
    one = maxq_mask(distinct_weight((8, 32, 1, 1), seed=2), 2, 8)
    assert one.max() <= 2  # 1x1: no kernel-position query


@st.composite
def weights_with_ties(draw):
    n, m = draw(st.sampled_from(NM))
    k = draw(st.sampled_from([1, 3, 5, 7]))
    o = draw(st.integers(1, 4))
    c = m * draw(st.integers(1, 3))
    values = draw(st.sampled_from(['zeros', 'repeated', 'sparse', 'random']))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    shape = (o, c, k, k)
    if values == 'zeros':
        w = torch.zeros(shape)
    elif values == 'repeated':
        w = torch.randint(-2, 3, shape, generator=g).float()
    elif values == 'sparse':
        w = torch.randn(shape, generator=g) * (torch.rand(shape, generator=g) < 0.2)
    else:
        w = torch.randn(shape, generator=g)
    return w, n, m


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(weights_with_ties())
def test_exactly_n_per_block_and_deterministic(case):
    w, n, m = case
    hard = nm_mask(w, n, m)
    blocks = hard.permute(0, 2, 3, 1).reshape(-1, m)
    assert torch.equal(blocks.sum(1), torch.full((blocks.shape[0], ), float(n)))
    assert torch.equal(hard, spec_hard_mask(w, n, m).float())
    soft = maxq_mask(w, n, m)
    assert torch.equal(soft, maxq_mask(w, n, m))
    assert torch.equal(soft > 0, hard > 0)
    assert is_nm_sparse(w * soft, n, m)
    assert ((soft == 0) | ((soft >= 1) & (soft <= 3))).all()


@settings(max_examples=30, deadline=None)
@given(weights_with_ties(), st.floats(0, 1))
def test_exemption_keeps_whole_blocks(case, preserve):
    w, n, m = case
    hard = nm_mask(w, n, m, preserve=preserve)
    blocks = hard.permute(0, 2, 3, 1).reshape(-1, m)
    full = int((blocks.sum(1) == m).sum())
    exempt = int(preserve * blocks.shape[0])
    assert full >= exempt if n < m else full == blocks.shape[0]
    assert torch.equal(hard, spec_hard_mask(w, n, m, preserve).float())


def test_linear_weight_groups_along_input_axis():
    w = distinct_weight((3, 8), seed=5)
    mask = nm_mask(w, 2, 4)
    for row in range(3):
        for g in range(2):
            block = w[row, g * 4:(g + 1) * 4].abs()
            top = set(block.argsort(descending=True)[:2].tolist())
            assert {i for i in range(4) if mask[row, g * 4 + i] == 1} == top

"""nm_mask / maxq_mask against the test's own transcription of "The mask" (docs/design.md)."""
import pytest
import torch

from mmdet_maxq.sparsity import is_nm_sparse, maxq_mask, nm_mask
from .spec_reference import spec_hard_mask, spec_maxq_mask
from .weights import distinct_weight

NM = [(1, 4), (2, 4), (2, 8), (4, 8), (1, 16)]
# 1x1, 3x3, 5x5, 7x7 convs, a grouped conv's weight (C = in_channels / groups = 4) and a
# linear weight.
SHAPES = [(4, 16, 1, 1), (3, 16, 3, 3), (2, 16, 5, 5), (2, 16, 7, 7), (8, 4, 3, 3), (5, 32)]
CASES = [(s, nm) for s in SHAPES for nm in NM if s[1] % nm[1] == 0]


def ulp_tolerance(dtype):
    """One unit in the last place of ``dtype`` at the top of the mask range [2, 3]."""
    return 2 * torch.finfo(dtype).eps


@pytest.mark.parametrize('shape, nm', CASES)
@pytest.mark.parametrize('preserve', [0.0, 0.3, 1.0])
def test_equal_to_spec_on_tie_free_float32(shape, nm, preserve):
    n, m = nm
    w = distinct_weight(shape, seed=sum(shape) + 10 * n + m)
    hard = nm_mask(w, n, m, preserve)
    assert hard.shape == w.shape and hard.dtype == w.dtype and hard.is_contiguous()
    assert torch.equal(hard, spec_hard_mask(w, n, m, preserve))
    soft = maxq_mask(w, n, m, preserve)
    want = spec_maxq_mask(w, n, m, preserve)
    assert torch.equal(soft == 0, want == 0)
    torch.testing.assert_close(soft, want, rtol=0, atol=ulp_tolerance(torch.float32))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('shape, nm', [((8, 4, 3, 3), (2, 4)), ((2, 16, 5, 5), (2, 8)),
                                       ((4, 16, 1, 1), (1, 16)), ((3, 16, 3, 3), (4, 8)),
                                       ((5, 32), (1, 4))])
@pytest.mark.parametrize('preserve', [0.0, 0.3, 1.0])
def test_equal_to_spec_on_tie_free_half_types(dtype, shape, nm, preserve):
    n, m = nm
    w = distinct_weight(shape, dtype=dtype, seed=len(shape) + n)
    hard = nm_mask(w, n, m, preserve)
    assert hard.dtype == dtype
    assert torch.equal(hard.float(), spec_hard_mask(w.float(), n, m, preserve))
    soft = maxq_mask(w, n, m, preserve)
    assert soft.dtype == dtype and soft.shape == w.shape
    want = spec_maxq_mask(w.float(), n, m, preserve).to(dtype)
    assert torch.equal(soft == 0, want == 0)
    torch.testing.assert_close(soft.float(), want.float(), rtol=0, atol=ulp_tolerance(dtype))


def test_float64_weights_stay_float64():
    w = distinct_weight((4, 8, 3, 3), seed=4).double()
    soft = maxq_mask(w, 2, 4, preserve=0.3)
    assert soft.dtype == torch.float64
    # Magnitudes exact in float32 too, so the support is the float32 spec's.
    assert torch.equal(soft == 0, spec_maxq_mask(w.float(), 2, 4, 0.3) == 0)


def test_maxq_values_and_structure():
    w = distinct_weight((8, 32, 3, 3), seed=1)
    s = maxq_mask(w, 2, 8)
    kept = s[s > 0]
    assert kept.min() >= 1 and kept.max() <= 3
    assert torch.equal(s > 0, nm_mask(w, 2, 8) > 0)
    assert (kept > 2.5).any() and (kept < 1.5).any()  # both queries boost some, not all
    assert is_nm_sparse(w * s, 2, 8)
    one = maxq_mask(distinct_weight((8, 32, 1, 1), seed=2), 2, 8)
    assert one.max() <= 2 and one.max() > 1.5  # 1x1: filter query only
    linear = maxq_mask(distinct_weight((8, 32), seed=3), 2, 8)
    assert linear.max() <= 2


def test_blocks_run_along_input_channels():
    """Zeroing all but two input channels of one block decides the 2:4 mask there."""
    w = torch.full((2, 8, 3, 3), 0.01)
    w[1, 4:8, 2, 1] = torch.tensor([0.0, 5.0, 0.0, 7.0])  # block (o=1, y=2, x=1, g=1)
    hard = nm_mask(w, 2, 4)
    assert hard[1, 4:8, 2, 1].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert hard[1, 0:4, 2, 1].tolist() == [1.0, 1.0, 0.0, 0.0]  # ties: lower index wins


def test_exemption_takes_smallest_norms_lower_index_first():
    w = torch.ones(1, 4, 1, 4)  # four blocks of 4 (one per kernel column), all norm 4
    w[0, :, 0, 2] = 0.5  # block 2 has the smallest norm
    hard = nm_mask(w, 1, 4, preserve=0.5)  # floor(0.5 * 4) = 2 blocks exempt
    whole = [int(hard[0, :, 0, x].sum()) for x in range(4)]
    assert whole == [4, 1, 4, 1]  # block 2, then the lowest index among the equal norms


def test_dense_limit_n_equals_m():
    w = distinct_weight((4, 8, 3, 3), seed=6)
    assert torch.equal(nm_mask(w, 8, 8), torch.ones_like(w))
    s = maxq_mask(w, 8, 8)
    assert torch.equal(s == 0, torch.zeros_like(w, dtype=torch.bool))
    torch.testing.assert_close(s, spec_maxq_mask(w, 8, 8), rtol=0, atol=1e-6)


def test_layout_and_autograd_do_not_change_the_mask():
    w = distinct_weight((8, 16, 3, 3), seed=7)
    want = maxq_mask(w, 2, 8, preserve=0.3)
    channels_last = w.to(memory_format=torch.channels_last)
    assert torch.equal(maxq_mask(channels_last, 2, 8, preserve=0.3), want)
    param = torch.nn.Parameter(w.clone())
    got = maxq_mask(param, 2, 8, preserve=0.3)
    assert not got.requires_grad and torch.equal(got, want)
    linear = distinct_weight((16, 8), seed=8).t()  # non-contiguous (8, 16) linear weight
    assert torch.equal(nm_mask(linear, 2, 8), nm_mask(linear.contiguous(), 2, 8))


def test_same_device_and_dtype_as_weight():
    w = distinct_weight((4, 8, 1, 1), seed=9)
    for fn in (nm_mask, maxq_mask):
        out = fn(w, 2, 4)
        assert out.device == w.device and out.dtype == w.dtype and out.shape == w.shape

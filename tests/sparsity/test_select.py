"""The selection primitives behind the masks, with and without the CPU tie check."""
import pytest
import torch

from mmdet_maxq.sparsity import _select, maxq_mask, nm_mask
from .reference import reference_maxq_mask
from .spec_reference import spec_hard_mask, spec_maxq_mask
from .weights import distinct_weight, tied_weight


def sorted_kth(x, k):
    return x.sort().values[k - 1]


VECTORS = {
    'random': lambda g: torch.rand(3000, generator=g),
    'few values': lambda g: torch.randint(0, 4, (3000, ), generator=g).float(),
    'constant': lambda g: torch.full((3000, ), 0.25),
    'ascending': lambda g: torch.arange(3000.0),
    'descending': lambda g: torch.arange(3000.0).flip(0),
    'mostly zero': lambda g: torch.rand(3000, generator=g) * (torch.rand(3000, generator=g) < 0.1),
}


@pytest.fixture(params=[True, False], ids=['cpu-tie-check', 'sync-free'])
def tie_check(request, monkeypatch):
    """Run a test with the CPU tie check on, and with CPU tensors on the sync-free path."""
    monkeypatch.setattr(_select, 'CPU_TIE_CHECK', request.param)
    return request.param


@pytest.mark.parametrize('name', list(VECTORS))
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_kth_pair_rows_is_exact(name, dtype):
    g = torch.Generator().manual_seed(0)
    x = VECTORS[name](g).to(dtype)
    rows = torch.stack([x, x.flip(0), x.roll(7)])
    for k in (1, 2, 750, 1500, 2250, 2999):
        low, high = _select.kth_pair_rows(rows, k)
        assert low.shape == high.shape == (3, 1) and low.dtype == dtype
        for r in range(3):
            assert float(low[r]) == float(sorted_kth(rows[r], k))
            assert float(high[r]) == float(sorted_kth(rows[r], k + 1))


@pytest.mark.parametrize('m', [1, 2, 3, 4, 5, 8, 16])
def test_nth_largest_columns_counts_repeats(m):
    g = torch.Generator().manual_seed(m)
    for columns in (torch.randint(0, 3, (m, 400), generator=g).float(), torch.rand(m, 400)):
        want = columns.sort(dim=0, descending=True).values
        for n in range(1, m + 1):
            got = _select.nth_largest_columns(columns, n)
            assert got.shape == (1, 400) and torch.equal(got[0], want[n - 1])
            keys = _select.ordered_view(columns)  # the integer view selects the same values
            assert torch.equal(_select.nth_largest_columns(keys, n).view(torch.float32), got)


@pytest.mark.parametrize('n, m', [(1, 4), (2, 4), (3, 4), (2, 8), (6, 8), (1, 16), (5, 5)])
def test_keep_n_largest_with_ties(tie_check, n, m):
    g = torch.Generator().manual_seed(n * m)
    for columns in (torch.randint(0, 3, (m, 500), generator=g).float(),
                    distinct_weight((m, 500), seed=m).abs()):
        keep = _select.keep_n_largest(columns, n)
        order = torch.sort(columns.t(), dim=1, descending=True, stable=True).indices[:, :n]
        want = torch.zeros(500, m).scatter_(1, order, 1.0).t()
        assert torch.equal(keep, want)


@pytest.mark.parametrize('largest', [True, False])
@pytest.mark.parametrize('lower_first', [True, False])
def test_mark_k_takes_ties_from_the_asked_end(largest, lower_first):
    x = torch.tensor([[3.0, 1.0, 2.0, 1.0, 1.0, 0.5, 1.0, 2.0]])
    for k in range(1, 9):
        values = x.sort(dim=1, descending=largest).values
        kth = values[:, k - 1:k]
        got = _select.mark_k(x, k, kth, largest=largest, dim=1, lower_first=lower_first)
        order = torch.sort(x if lower_first else x.flip(1), dim=1, descending=largest,
                           stable=True).indices[:, :k]
        want = torch.zeros_like(x).scatter_(1, order, 1.0)
        assert torch.equal(got, want if lower_first else want.flip(1)), k


def test_smallest_e_ties_take_lower_index():
    x = torch.tensor([3.0, 1.0, 2.0, 1.0, 1.0, 0.5] * 20)
    for e in (0, 1, 20, 21, 50, 119, 120, 200):
        marked = _select.smallest_e(x, e)
        want = torch.zeros(120, dtype=torch.bool)
        want[torch.sort(x, stable=True).indices[:e]] = True
        assert torch.equal(marked, want), e


@pytest.mark.parametrize('shape, nm', [((4, 16, 3, 3), (2, 4)), ((2, 32, 5, 5), (2, 8)),
                                       ((8, 16, 3, 3), (1, 16))])
@pytest.mark.parametrize('preserve', [0.0, 0.3])
def test_masks_equal_spec_both_ways(tie_check, shape, nm, preserve):
    n, m = nm
    w = distinct_weight(shape, seed=11)
    assert torch.equal(nm_mask(w, n, m, preserve), spec_hard_mask(w, n, m, preserve))
    got = maxq_mask(w, n, m, preserve)
    want = spec_maxq_mask(w, n, m, preserve)
    assert torch.equal(got == 0, want == 0)
    torch.testing.assert_close(got, want, rtol=0, atol=2.4e-7)


@pytest.mark.parametrize('kind', ['repeated', 'sparse', 'constant', 'zeros'])
def test_masks_with_ties_equal_reference_both_ways(tie_check, kind):
    w = tied_weight((4, 16, 3, 3), kind, seed=3)
    for preserve in (0.0, 0.5):
        assert torch.equal(nm_mask(w, 2, 4, preserve), spec_hard_mask(w, 2, 4, preserve))
        assert torch.equal(maxq_mask(w, 2, 4, preserve), reference_maxq_mask(w, 2, 4, preserve))


def test_full_size_layer_equals_sort_reference():
    # 256 * 256 = 65536 entries per kernel position and 73728 block norms.
    w = torch.randn(256, 256, 3, 3, generator=torch.Generator().manual_seed(5)) * 0.05
    for preserve in (0.0, 0.5):
        assert torch.equal(maxq_mask(w, 2, 8, preserve), reference_maxq_mask(w, 2, 8, preserve))


@pytest.mark.parametrize('shape, nm', [((3, 16, 3, 3), (2, 8)), ((5, 32), (1, 16)),
                                       ((8, 4, 3, 3), (2, 4))])
def test_package_reference_equals_spec(shape, nm):
    """The benchmark's sort-based reference is itself the spec."""
    n, m = nm
    w = distinct_weight(shape, seed=12)
    got = reference_maxq_mask(w, n, m, 0.3)
    want = spec_maxq_mask(w, n, m, 0.3)
    assert torch.equal(got == 0, want == 0)
    torch.testing.assert_close(got, want, rtol=0, atol=2.4e-7)


@pytest.mark.parametrize('fill', [0.5, 0.0])
def test_a_few_tied_blocks_and_filters(tie_check, fill):
    """A minority of tied blocks and rows next to tie-free ones."""
    w = distinct_weight((8, 16, 3, 3), seed=13)
    w[0] = fill  # one filter: its F row and its 18 blocks are all ties
    w[3, 4:8, 1, 1] = -fill  # one more tied block
    for preserve in (0.0, 0.3):
        assert torch.equal(nm_mask(w, 2, 4, preserve), spec_hard_mask(w, 2, 4, preserve))
        got = maxq_mask(w, 2, 4, preserve)
        want = spec_maxq_mask(w, 2, 4, preserve)
        assert torch.equal(got == 0, want == 0)
        torch.testing.assert_close(got, want, rtol=0, atol=2.4e-7)

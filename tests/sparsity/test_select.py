"""The selection shortcuts behind the masks, including the sampled paths and their misses."""
import pytest
import torch

from mmdet_maxq.sparsity import _select, maxq_mask, nm_mask
from mmdet_maxq.sparsity.reference import reference_maxq_mask

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


@pytest.fixture
def small_samples(monkeypatch):
    """Sampled selection on short vectors: sample 256 of anything from 64 entries on."""
    monkeypatch.setattr(_select, 'SAMPLED_MIN_LENGTH', 64)
    monkeypatch.setattr(_select, 'SAMPLE_SIZE', 256)
    _select._sample_cache.clear()
    yield
    _select._sample_cache.clear()


@pytest.mark.parametrize('name', list(VECTORS))
@pytest.mark.parametrize('z', [4.0, 0.0])
def test_kth_smallest_is_exact(small_samples, monkeypatch, name, z):
    monkeypatch.setattr(_select, 'SAMPLE_Z', z)  # z = 0: tight brackets that often miss
    g = torch.Generator().manual_seed(0)
    x = VECTORS[name](g)
    for k in (1, 2, 750, 2250, 2999):
        got = _select.kth_smallest(x, [k, k + 1])
        assert [float(v) for v in got] == [float(sorted_kth(x, k)), float(sorted_kth(x, k + 1))]


def test_sampled_bracket_hits_and_misses(small_samples, monkeypatch):
    x = torch.rand(3000, generator=torch.Generator().manual_seed(1))
    found = _select.sampled_kth(x, [2250, 2251])
    assert found is not None and float(found[0]) == float(sorted_kth(x, 2250))
    monkeypatch.setattr(_select, 'SAMPLE_Z', 0.0)  # tight brackets: some miss
    results = {k: _select.sampled_kth(x, [k, k + 1]) for k in range(100, 2900, 50)}
    assert any(r is None for r in results.values())
    for k, r in results.items():
        assert r is None or float(r[1]) == float(sorted_kth(x, k + 1))


@pytest.mark.parametrize('n, m', [(1, 4), (2, 4), (3, 4), (2, 8), (6, 8), (1, 16)])
def test_keep_n_largest_with_ties(n, m):
    g = torch.Generator().manual_seed(n * m)
    columns = torch.randint(0, 3, (m, 500), generator=g).float()
    keep = _select.keep_n_largest(columns, n)
    order = torch.sort(columns.t(), dim=1, descending=True, stable=True).indices[:, :n]
    want = torch.zeros(500, m).scatter_(1, order, 1.0).t()
    assert torch.equal(keep, want)


def test_smallest_e_ties_take_lower_index(small_samples):
    x = torch.tensor([3.0, 1.0, 2.0, 1.0, 1.0, 0.5] * 20)
    marked = _select.smallest_e(x, 50)
    want = torch.zeros(120, dtype=torch.bool)
    want[torch.sort(x, stable=True).indices[:50]] = True
    assert torch.equal(marked, want)


@pytest.mark.parametrize('shape, nm', [((4, 16, 3, 3), (2, 4)), ((2, 32, 5, 5), (2, 8)),
                                       ((8, 16, 3, 3), (1, 16))])
@pytest.mark.parametrize('preserve', [0.0, 0.3])
def test_masks_on_sampled_paths_equal_spec(small_samples, shape, nm, preserve):
    n, m = nm
    w = distinct_weight(shape, seed=11)
    assert torch.equal(nm_mask(w, n, m, preserve), spec_hard_mask(w, n, m, preserve))
    got = maxq_mask(w, n, m, preserve)
    want = spec_maxq_mask(w, n, m, preserve)
    assert torch.equal(got == 0, want == 0)
    torch.testing.assert_close(got, want, rtol=0, atol=2.4e-7)


@pytest.mark.parametrize('kind', ['repeated', 'sparse', 'constant'])
def test_masks_on_sampled_paths_with_ties(small_samples, kind):
    w = tied_weight((4, 16, 3, 3), kind, seed=3)
    for preserve in (0.0, 0.5):
        assert torch.equal(nm_mask(w, 2, 4, preserve), spec_hard_mask(w, 2, 4, preserve))
        assert torch.equal(maxq_mask(w, 2, 4, preserve), reference_maxq_mask(w, 2, 4, preserve))


def test_full_size_sampled_path_equals_sort_reference():
    # 256 * 256 = 65536 entries per kernel position and 73728 block norms: sampled by default.
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
def test_a_few_tied_blocks_and_filters(fill):
    """A minority of tied blocks and rows (the gather/scatter path) next to tie-free ones."""
    w = distinct_weight((8, 16, 3, 3), seed=13)
    w[0] = fill  # one filter: its F row and its 18 blocks are all ties
    w[3, 4:8, 1, 1] = -fill  # one more tied block
    for preserve in (0.0, 0.3):
        assert torch.equal(nm_mask(w, 2, 4, preserve), spec_hard_mask(w, 2, 4, preserve))
        got = maxq_mask(w, 2, 4, preserve)
        want = spec_maxq_mask(w, 2, 4, preserve)
        assert torch.equal(got == 0, want == 0)
        torch.testing.assert_close(got, want, rtol=0, atol=2.4e-7)

"""Property-based checks of the masks on random shapes, N:M and tie-heavy weights."""
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmdet_maxq.sparsity import is_nm_sparse, maxq_mask, nm_mask
from .spec_reference import spec_hard_mask
from .weights import tied_weight

NM = [(1, 4), (2, 4), (3, 4), (2, 8), (4, 8), (6, 8), (1, 16), (4, 4)]
KINDS = ['zeros', 'repeated', 'sparse', 'constant', 'random']
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def weights(draw):
    n, m = draw(st.sampled_from(NM))
    o = draw(st.integers(1, 4))
    c = m * draw(st.integers(1, 3))
    k = draw(st.sampled_from([None, 1, 3, 5]))
    shape = (o, c) if k is None else (o, c, k, k)
    kind = draw(st.sampled_from(KINDS))
    return tied_weight(shape, kind, seed=draw(st.integers(0, 2**16))), n, m


def blocks_of(mask, m):
    m4 = mask[:, :, None, None] if mask.dim() == 2 else mask
    return m4.permute(0, 2, 3, 1).reshape(-1, m)


@settings(max_examples=80, **SETTINGS)
@given(weights())
def test_exactly_n_per_block_with_ties(case):
    w, n, m = case
    hard = nm_mask(w, n, m)
    assert torch.equal(blocks_of(hard, m).sum(1), torch.full((w.numel() // m, ), float(n)))
    assert torch.equal(hard, spec_hard_mask(w, n, m))  # ties: lower index kept
    assert is_nm_sparse(w * hard, n, m)


@settings(max_examples=60, **SETTINGS)
@given(weights())
def test_maxq_support_values_and_determinism(case):
    w, n, m = case
    soft = maxq_mask(w, n, m)
    assert torch.equal(soft, maxq_mask(w.clone(), n, m))
    assert torch.equal(soft != 0, nm_mask(w, n, m) != 0)
    assert bool(((soft == 0) | ((soft >= 1) & (soft <= 3))).all())
    if w.dim() == 2 or w.shape[-1] == 1:
        assert soft.max() <= 2  # no kernel-position query
    assert is_nm_sparse(w * soft, n, m)


@settings(max_examples=40, **SETTINGS)
@given(weights(), st.floats(0, 1))
def test_exemption_matches_spec(case, preserve):
    w, n, m = case
    hard = nm_mask(w, n, m, preserve=preserve)
    assert torch.equal(hard, spec_hard_mask(w, n, m, preserve))
    whole = int((blocks_of(hard, m).sum(1) == m).sum())
    exempt = int(preserve * (w.numel() // m))
    assert whole >= exempt
    soft = maxq_mask(w, n, m, preserve=preserve)
    assert torch.equal(soft != 0, hard != 0)

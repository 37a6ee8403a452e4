"""PackedMasks: the masks of many weights in one packed computation, bit-identical to the
per-weight ``maxq_mask`` / ``nm_mask``, sync-free, with a fixed, small number of ops."""
import pytest
import torch

from mmdet_maxq.sparsity import _select, maxq_mask, nm_mask
from mmdet_maxq.sparsity.batched import PackedMasks
from .test_sync_free import OpRecorder
from .weights import distinct_weight, resnet50_eligible_shapes, tied_weight

SHAPES = [(16, 16, 3, 3), (32, 16, 1, 1), (8, 32, 3, 3), (16, 8, 1, 1), (8, 16), (24, 24, 3, 1)]
# (n, m, per-weight preserve rates): fully sparse, mid-schedule (mixed rates), dense start,
# N = M, an odd N.
CASES = [(2, 4, [0.0] * 6), (2, 8, [0.5, 0.25, 0.5, 1.0, 0.0, 0.37]), (1, 8, [1.0] * 6),
         (8, 8, [0.3] * 6), (3, 8, [0.37] * 6)]
KINDS = ('random', 'zeros', 'repeated', 'sparse', 'constant', 'distinct')


def _weights(kind, dtype, seed=0):
    if kind == 'distinct' and dtype != torch.float64:
        return [distinct_weight(s, dtype, seed=seed + i) for i, s in enumerate(SHAPES)]
    return [tied_weight(s, kind if kind != 'distinct' else 'random', seed=seed + i).to(dtype)
            for i, s in enumerate(SHAPES)]


def _per_weight(method, weights, n, m, preserves):
    fn = maxq_mask if method == 'maxq' else nm_mask
    return [fn(w, n, m, p) for w, p in zip(weights, preserves)]


@pytest.mark.parametrize('n, m, preserves', CASES)
@pytest.mark.parametrize('method', ['maxq', 'srste'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_bit_identical_to_the_per_weight_masks(n, m, preserves, method, dtype, monkeypatch):
    """Ties, zeros, constants, all dtypes; against both per-weight CPU paths."""
    plan = PackedMasks(SHAPES, n, m, method, 1e-2, 'cpu', dtype)
    for kind in KINDS:
        weights = _weights(kind, dtype)
        got = plan.masks(weights, preserves)
        for check in (True, False):
            monkeypatch.setattr(_select, 'CPU_TIE_CHECK', check)
            want = _per_weight(method, weights, n, m, preserves)
            for i, (g, w) in enumerate(zip(got, want)):
                assert g.dtype == dtype and g.shape == SHAPES[i]
                assert torch.equal(g, w), (kind, check, SHAPES[i])


# Linear weights (O, C), as a transformer's qkv / proj / FFN layers, packed on their own.
LINEAR_SHAPES = [(24, 16), (16, 48), (40, 8), (8, 64), (48, 24)]


@pytest.mark.parametrize('n, m', [(2, 4), (2, 8), (8, 8), (3, 8)])
@pytest.mark.parametrize('method', ['maxq', 'srste'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_linear_weights_bit_identical(n, m, method, dtype):
    shapes = [s for s in LINEAR_SHAPES if s[1] % m == 0]
    preserves = [0.0, 0.5, 1.0, 0.37, 0.25][:len(shapes)]
    plan = PackedMasks(shapes, n, m, method, 1e-2, 'cpu', dtype)
    for kind in KINDS:
        if kind == 'distinct' and dtype != torch.float64:
            weights = [distinct_weight(s, dtype, seed=i) for i, s in enumerate(shapes)]
        else:
            kind_ = kind if kind != 'distinct' else 'random'
            weights = [tied_weight(s, kind_, seed=i).to(dtype) for i, s in enumerate(shapes)]
        got = plan.masks(weights, preserves)
        for g, w, shape in zip(got, _per_weight(method, weights, n, m, preserves), shapes):
            assert g.dtype == dtype and g.shape == shape
            assert torch.equal(g, w), (kind, shape)


def test_already_folded_weights_and_rate_changes():
    """Weights already exactly N:M (folded) and a plan reused across preserve rates."""
    weights = [w * nm_mask(w, 2, 8) for w in _weights('random', torch.float32, seed=3)]
    plan = PackedMasks(SHAPES, 2, 8, 'maxq')
    for rate in (0.0, 0.6, 0.0, 1.0):
        got = plan.masks(weights, [rate] * len(SHAPES))
        for g, w in zip(got, _per_weight('maxq', weights, 2, 8, [rate] * len(SHAPES))):
            assert torch.equal(g, w), rate


def test_non_finite_weight_is_named():
    weights = _weights('random', torch.float32)
    weights[2][0, 0, 0, 0] = float('nan')
    plan = PackedMasks(SHAPES, 2, 8, 'maxq')
    names = [f'layer{i}' for i in range(len(SHAPES))]
    with pytest.raises(ValueError, match=r'layer2 of shape \(8, 32, 3, 3\) has non-finite'):
        plan.masks(weights, [0.0] * len(SHAPES), names)


def test_bad_layouts_and_rates():
    with pytest.raises(ValueError, match='C divisible by m'):
        PackedMasks([(8, 12, 3, 3)], 2, 8, 'maxq')
    with pytest.raises(ValueError, match='tau must be a positive number'):
        PackedMasks(SHAPES, 2, 8, 'maxq', tau=float('inf'))
    plan = PackedMasks(SHAPES, 2, 8, 'srste')
    with pytest.raises(ValueError, match='preserve must be a number in'):
        plan.masks(_weights('random', torch.float32), [1.5] * len(SHAPES))
    with pytest.raises(ValueError, match='do not match the packed layout'):
        plan.masks(_weights('random', torch.float64), [0.0] * len(SHAPES))


def swin_t_linear_shapes():
    """The ``nn.Linear`` weights of a Swin-T backbone (qkv, proj, fc1, fc2; patch merging)."""
    shapes = []
    for stage, (dim, depth) in enumerate(zip((96, 192, 384, 768), (2, 2, 6, 2))):
        shapes += [(3 * dim, dim), (dim, dim), (4 * dim, dim), (dim, 4 * dim)] * depth
        if stage < 3:
            shapes.append((2 * dim, 4 * dim))
    return shapes


@pytest.mark.parametrize('method', ['maxq', 'srste'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize('model, shapes, max_ops', [
    ('resnet50', resnet50_eligible_shapes(8), 280),  # measured 258-261
    ('swin-t', swin_t_linear_shapes(), 260),  # measured 234-237
])
def test_on_meta_sync_free_and_few_ops(method, dtype, model, shapes, max_ops):
    """Any host read raises on ``meta``; the count is fixed but for two views per weight."""
    plan = PackedMasks(shapes, 2, 8, method, 1e-2, 'meta', dtype)
    weights = [torch.empty(s, dtype=dtype, device='meta') for s in shapes]
    plan.masks(weights, [0.5] * len(shapes))
    with OpRecorder() as recorder:
        masks = plan.masks(weights, [0.5] * len(shapes))
    assert recorder.host_reads() == [] and recorder.float_cumsums() == []
    # A view per weight to pack and one to unpack; the other ~155 ops (maxq; ~115 for srste)
    # are the same whatever the number of weights.
    assert len(recorder.ops()) <= max_ops, len(recorder.ops())
    assert [tuple(mk.shape) for mk in masks] == [tuple(s) for s in shapes]
    assert all(mk.dtype == dtype and mk.device.type == 'meta' for mk in masks)


def test_deterministic_algorithms_allowed():
    weights = _weights('repeated', torch.float32)
    plan = PackedMasks(SHAPES, 2, 8, 'maxq')
    torch.use_deterministic_algorithms(True)
    try:
        got = plan.masks(weights, [0.5] * len(SHAPES))
    finally:
        torch.use_deterministic_algorithms(False)
    for g, w in zip(got, _per_weight('maxq', weights, 2, 8, [0.5] * len(SHAPES))):
        assert torch.equal(g, w)

"""N:M Linear layers: the mask of a 2-D weight, SparseLinear, selection, the refresh."""
import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdet_maxq.models import (SparseConv2d, SparseLinear, SparsitySettings, refresh_masks,
                               sparse_layers, sparsify)
from mmdet_maxq.sparsity import _select, is_nm_sparse, maxq_mask, nm_mask
from mmdet_maxq.sparsity.batched import PackedMasks


def _weight(shape, dtype, ties):
    torch.manual_seed(0)
    w = torch.randn(shape, dtype=torch.float64)
    if ties:  # few distinct magnitudes: ties at every threshold
        w = (w * 2).round() / 2
    return w.to(dtype)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('preserve', [0.0, 0.3, 1.0])
@pytest.mark.parametrize('ties', [False, True])
@pytest.mark.parametrize('tie_check', [True, False])
def test_2d_mask_is_the_1x1_conv_mask_bit_for_bit(dtype, preserve, ties, tie_check, monkeypatch):
    monkeypatch.setattr(_select, 'CPU_TIE_CHECK', tie_check)
    w = _weight((24, 32), dtype, ties)
    w4 = w[:, :, None, None]
    for n, m in ((2, 4), (2, 8), (1, 16)):
        assert torch.equal(maxq_mask(w, n, m, preserve),
                           maxq_mask(w4, n, m, preserve).view(w.shape))
        assert torch.equal(nm_mask(w, n, m, preserve), nm_mask(w4, n, m, preserve).view(w.shape))
        for method, fn in (('maxq', maxq_mask), ('srste', nm_mask)):
            plan = PackedMasks([tuple(w.shape), (8, 16, 3, 3)], n, m, method, dtype=dtype)
            conv_w = _weight((8, 16, 3, 3), dtype, ties)
            packed = plan.masks([w, conv_w], [preserve, preserve])
            assert torch.equal(packed[0], fn(w4, n, m, preserve).view(w.shape))
            assert torch.equal(packed[1], fn(conv_w, n, m, preserve))


class Block(nn.Module):
    """A transformer-like block: a conv, two linear layers and an attention."""

    def __init__(self, read_weight_directly=False):
        super().__init__()
        self.conv = nn.Conv2d(16, 16, 1)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16)
        self.stem = nn.Linear(3, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.read_weight_directly = read_weight_directly

    def forward(self, x):
        x = self.conv(x).flatten(2).transpose(1, 2)
        if self.read_weight_directly:  # as some attentions do (F.linear on a child's weight)
            x = F.linear(x, self.fc1.weight, self.fc1.bias)
        else:
            x = self.fc1(x)
        x = self.fc2(x.relu())
        return self.attn(x, x, x)[0]


class Model(nn.Module):

    def __init__(self, **kwargs):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = Block(**kwargs)

    def forward(self, x):
        return self.backbone(x)


def _sparse(**settings):
    model = Model()
    report = sparsify(model, SparsitySettings(**dict(dict(n=2, m=8), **settings)))
    return model, report


def test_default_selects_convs_and_linears_and_lists_the_rest():
    model, report = _sparse()
    assert report.sparse == ['backbone.conv', 'backbone.fc1', 'backbone.fc2']
    assert isinstance(model.backbone.fc1, SparseLinear)
    assert isinstance(model.backbone.conv, SparseConv2d)
    assert report.dense == {
        'backbone.stem': '3 input features not divisible by M=8',
        'backbone.attn.out_proj':
            'its weight is read by nn.MultiheadAttention.forward without calling it'}
    assert report.summary().splitlines()[0] == (
        '1 convs sparse, 2 linear layers sparse, 2 matched layers left dense')


@pytest.mark.parametrize('types,sparse', [(('conv', ), ['backbone.conv']),
                                          (('linear', ), ['backbone.fc1', 'backbone.fc2'])])
def test_layer_types_restrict_the_selection(types, sparse):
    _, report = _sparse(layer_types=types)
    assert report.sparse == sparse


def test_unknown_layer_type_is_refused():
    with pytest.raises(ValueError, match=r"sparsity\.layer_types must be a non-empty list of "
                       r"\['conv', 'linear'\], got \['attention'\]"):
        SparsitySettings(layer_types=['attention'])


@pytest.mark.parametrize('layers,named', [
    (['backbone.stem'], "'backbone.stem' cannot be 2:8 sparse: 3 input features"),
    (['backbone.attn.out_proj'], "'backbone.attn.out_proj' cannot be 2:8 sparse: its weight "
                                 'is read by nn.MultiheadAttention.forward'),
])
def test_explicit_ineligible_layer_is_refused(layers, named):
    with pytest.raises(ValueError, match=named):
        _sparse(layers=layers)


@pytest.mark.parametrize('layers,exclude,culprit', [
    (['backbone.*', 'backbone.st*'], [], "'backbone.st*' (backbone.stem: 3 input features"),
    (['backbone.attn*'], [], "'backbone.attn*' (backbone.attn.out_proj: its weight"),
    (['backbone.fc*'], ['backbone.fc*'], "'backbone.fc*' (backbone.fc1: excluded"),
])
def test_patterns_that_make_nothing_sparse_are_refused(layers, exclude, culprit):
    with pytest.raises(ValueError) as err:
        _sparse(layers=layers, exclude=exclude)
    assert str(err.value).startswith('model.sparsity.layers: no layer becomes 2:8 sparse under')
    assert culprit in str(err.value)


def test_pattern_matching_only_ineligible_convs_is_refused():
    backbone = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 16, 3))
    model = nn.Sequential()
    model.add_module('backbone', backbone)
    with pytest.raises(ValueError, match=r"under 'backbone\.0\*' \(backbone\.0: 3 input channels"):
        sparsify(model, SparsitySettings(n=2, m=8, layers=['backbone.0*']))


def test_sparse_linear_computes_with_the_masked_weight_and_folds():
    model, _ = _sparse()
    layer = model.backbone.fc1
    x = torch.randn(2, 16, 4, 4)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert torch.equal(layer.mask, maxq_mask(layer.weight, 2, 8))
    tokens = torch.randn(3, 16)
    with torch.no_grad():
        assert torch.equal(layer(tokens), F.linear(tokens, layer.weight * layer.mask, layer.bias))
    plain = layer.to_dense()
    assert type(plain) is nn.Linear and is_nm_sparse(plain.weight, 2, 8)
    with torch.no_grad():
        assert torch.equal(plain(tokens), layer(tokens))
        model.backbone.fc1 = plain
        model.backbone.fc2 = model.backbone.fc2.to_dense()
        model.backbone.conv = model.backbone.conv.to_dense()
        assert not sparse_layers(model)
        torch.testing.assert_close(model(x), out, rtol=0, atol=1e-6)


def test_convert_from_keeps_the_parameters_and_the_mmcv_wrapper_is_plain():
    from mmcv.cnn.bricks.wrappers import Linear as MMCVLinear
    linear = MMCVLinear(16, 8)
    sparse = SparseLinear.convert_from(linear, 2, 4, layer_name='neck.fc')
    assert sparse.weight is linear.weight and sparse.bias is linear.bias
    assert sparse.extra_repr().startswith('in_features=16, out_features=8, bias=True, nm=2:4')
    model = nn.Sequential()
    model.add_module('neck', nn.Sequential())
    model.neck.add_module('fc', MMCVLinear(16, 8))
    assert sparsify(model, SparsitySettings(layers=['neck.*'])).sparse == ['neck.fc']
    with pytest.raises(ValueError, match=r'neck\.fc: a linear layer with 6 input features '
                       r'cannot be 2:4 sparse'):
        SparseLinear.convert_from(nn.Linear(6, 8), 2, 4, layer_name='neck.fc')


def test_checkpoint_has_no_masks_and_old_ones_with_masks_load():
    model, _ = _sparse()
    plain = Model()
    assert set(model.state_dict()) == set(plain.state_dict())
    old = dict(plain.state_dict(), **{'backbone.fc1.mask': torch.ones(32, 16)})
    result = model.load_state_dict(old, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


class _Records(logging.Handler):

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _warnings_of(run):
    """The warnings MMEngine's current logger gets while ``run()`` runs."""
    from mmengine.logging import MMLogger
    logger, records = MMLogger.get_current_instance(), _Records()
    logger.addHandler(records)
    try:
        run()
    finally:
        logger.removeHandler(records)
    return [m for m in records.messages if 'not called' in m]


def test_a_layer_read_without_being_called_is_named_in_a_warning():
    model = Model(read_weight_directly=True)
    sparsify(model, SparsitySettings(n=2, m=8))

    def two_steps():
        model.train()(torch.randn(1, 16, 2, 2)).sum().backward()
        model(torch.randn(1, 16, 2, 2)).sum().backward()  # checked once

    warnings = _warnings_of(two_steps)
    assert len(warnings) == 1
    assert warnings[0].startswith('1 sparse layers were not called in the first training '
                                  'forward: backbone.fc1.')


def test_no_warning_when_every_sparse_layer_is_called():
    model, _ = _sparse()
    assert _warnings_of(lambda: model.train()(torch.randn(1, 16, 2, 2)).sum().backward()) == []


@pytest.mark.parametrize('ste', ['soft', 'hard'])
def test_two_training_forwards_before_one_backward(ste):
    model, _ = _sparse(ste=ste)
    model.train()
    fc1 = model.backbone.fc1
    xs = [torch.randn(2, 16, 3, 3) for _ in range(2)]
    outs, used = [], []
    for x in xs:
        outs.append(model(x))
        used.append({name: (layer.weight.detach() * layer.mask, layer.mask)
                     for name, layer in sparse_layers(model)})
        with torch.no_grad():  # the weight changes between the two forwards
            fc1.weight.add_(0.5 * torch.randn_like(fc1.weight))
    sum(out.square().sum() for out in outs).backward()
    assert not torch.equal(used[0]['backbone.fc1'][1], used[1]['backbone.fc1'][1])
    # Reference: each forward with the constant W * S it used; the hard STE scales by its S.
    want = 0
    for x, layers in zip(xs, used):
        block = model.backbone
        leaf = layers['backbone.fc1'][0].clone().requires_grad_()
        hidden = F.conv2d(x, layers['backbone.conv'][0], block.conv.bias)
        hidden = F.linear(hidden.flatten(2).transpose(1, 2), leaf, fc1.bias).relu()
        hidden = F.linear(hidden, layers['backbone.fc2'][0], block.fc2.bias)
        grad, = torch.autograd.grad(block.attn(hidden, hidden, hidden)[0].square().sum(), leaf)
        want = want + (grad * layers['backbone.fc1'][1] if ste == 'hard' else grad)
    torch.testing.assert_close(fc1.weight.grad, want, rtol=1e-4, atol=1e-5)


def test_refresh_masks_covers_linear_layers_packed(monkeypatch):
    monkeypatch.setattr(_select, 'CPU_TIE_CHECK', False)  # the device (packed) path
    model, _ = _sparse()
    refresh_masks(model, 0.25)
    for _, layer in sparse_layers(model):
        assert torch.equal(layer.mask, maxq_mask(layer.weight, 2, 8, 0.25))

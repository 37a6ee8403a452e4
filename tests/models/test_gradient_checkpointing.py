"""Gradient checkpointing (``with_cp=True``) recomputes the forward, not the masks."""
import pytest
import torch

from mmdet_maxq.models import SparsitySettings, sparse_layers, sparsify
from ..sparsity.test_sync_free import OpRecorder
from .test_mask_refresh import Wrapped


def _resnet(depth, with_cp, base_channels=64):
    from mmdet.models.backbones import ResNet
    torch.manual_seed(0)
    model = Wrapped('backbone', ResNet(depth=depth, with_cp=with_cp, norm_eval=False,
                                       base_channels=base_channels))
    sparsify(model, SparsitySettings(n=2, m=8))
    return model.train()


def _ops(model, x, backward=True):
    with OpRecorder() as recorder:
        out = model(x)
        if backward:
            sum(o.sum() for o in out).backward()
    return len(recorder.ops())


def test_with_cp_dispatches_at_most_one_forward_more_on_meta():
    """ResNet-50 on ``meta`` (the device path): forward + backward."""
    x = torch.randn(2, 3, 64, 64, device='meta')
    counts = {}
    for with_cp in (False, True):
        model = _resnet(50, with_cp).to('meta')
        _ops(model, x)  # one-time layouts
        model.zero_grad()
        counts[with_cp] = _ops(model, x)
        if not with_cp:
            forward = _ops(model, x, backward=False)
    assert counts[True] <= counts[False] + forward, (counts, forward)
    assert counts[True] > counts[False]  # the recomputed forward is there


def test_with_cp_gradients_equal_and_masks_not_recomputed():
    x = torch.randn(2, 3, 32, 32)
    grads, calls = {}, {}
    for with_cp in (False, True):
        model = _resnet(18, with_cp, base_channels=16)
        count = []
        for _, layer in sparse_layers(model):
            original = layer.compute_mask
            layer.compute_mask = lambda *a, _o=original, **k: count.append(1) or _o(*a, **k)
        sum(o.sum() for o in model(x)).backward()
        calls[with_cp] = len(count)
        grads[with_cp] = {name: layer.weight.grad.clone() for name, layer in sparse_layers(model)}
        assert not any(layer.mask_held for _, layer in sparse_layers(model))
    assert calls[True] == calls[False] == len(grads[False])  # once each, by the refresh
    for name, grad in grads[False].items():
        # The recomputed forward sums in another order: equal up to float rounding (a dense
        # ResNet-18 differs by about 1e-6 of the norm too).
        assert float((grads[True][name] - grad).norm() / grad.norm()) < 1e-5, name


@pytest.mark.parametrize('ste', ['soft', 'hard'])
def test_with_cp_hard_and_soft_ste_backward(ste):
    model = _resnet(18, True, base_channels=16)
    for _, layer in sparse_layers(model):
        layer.ste = ste
    x = torch.randn(2, 3, 32, 32)
    sum(o.sum() for o in model(x)).backward()
    assert all(layer.weight.grad is not None for _, layer in sparse_layers(model))

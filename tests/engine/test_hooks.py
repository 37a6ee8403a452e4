"""Hook behaviour that needs no training run."""
import types

import pytest
import torch
import torch.nn as nn

import mmdet_maxq  # noqa: F401
from mmengine.optim import OptimWrapper
from mmdet_maxq.engine.hooks import (SparsityLoggerHook, SparsityScheduleHook,
                                     SRSTEDecayHook)
from mmdet_maxq.models import SparseConv2d


class TinySparse(nn.Module):
    """Stands in for SparseDetector in the hooks (same two methods)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = SparseConv2d.convert_from(nn.Conv2d(16, 8, 3, padding=1), 2, 8,
                                              method='srste')

    def sparse_layers(self):
        return [self.conv]


def _runner(model, optimizer):
    return types.SimpleNamespace(model=model, optim_wrapper=OptimWrapper(optimizer))


def test_decay_added_after_amp_unscale_before_step(monkeypatch):
    from mmdet_maxq.engine.hooks import srste_decay_hook
    model = TinySparse()
    monkeypatch.setattr(srste_decay_hook, 'get_sparse_detector', lambda runner, name: model)
    conv = model.conv
    conv.update_mask(0.0)
    optimizer = torch.optim.SGD([conv.weight, conv.bias], lr=0.0)
    seen = {}
    hook = SRSTEDecayHook(decay=0.5)
    hook.before_train(_runner(model, optimizer))

    def record(opt, args, kwargs):  # registered after the decay hook: sees the final grad
        seen['grad'] = conv.weight.grad.clone()

    optimizer.register_step_pre_hook(record)
    scaler = torch.amp.GradScaler('cpu', init_scale=1024.0)
    x = torch.randn(2, 16, 5, 5)
    loss = conv(x).sum()
    scaler.scale(loss).backward()
    scaled = conv.weight.grad.clone()
    scaler.step(optimizer)
    unscaled = scaled / 1024.0
    expected = unscaled + 0.5 * (1 - conv.mask.clamp(0, 1)) * conv.weight.detach()
    torch.testing.assert_close(seen['grad'], expected)
    hook.after_train(None)
    assert not hook._handles


def test_hook_argument_checks():
    with pytest.raises(ValueError, match='kind must be one of'):
        SparsityScheduleHook(kind='step')
    with pytest.raises(ValueError, match=r'start \(5\) must be <= end \(2\)'):
        SparsityScheduleHook(start=5, end=2)
    with pytest.raises(ValueError, match='decay must be a positive number'):
        SRSTEDecayHook(decay=0)
    with pytest.raises(ValueError, match='interval must be an integer >= 1'):
        SparsityLoggerHook(interval=0)


def test_hooks_refuse_a_plain_detector():
    runner = types.SimpleNamespace(model=nn.Conv2d(3, 3, 1))
    with pytest.raises(TypeError, match='needs model.type="SparseDetector"'):
        SparsityScheduleHook().before_train(runner)

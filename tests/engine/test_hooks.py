"""Hook behaviour that needs no training run."""
import types

import pytest
import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

import mmdet_maxq  # noqa: F401
from mmdet_maxq.engine.hooks import SparsityLoggerHook, SparsityScheduleHook, SRSTEDecayHook
from mmdet_maxq.engine.hooks.sparsity_schedule_hook import scheduled_preserve_rate
from mmdet_maxq.engine.model_wrappers import DeviceAwareDDP
from mmdet_maxq.models import SparseConv2d, SparseLinear, SparsitySettings
from mmdet_maxq.models.sparsify import SETTINGS_ATTR


class TinySparse(nn.Module):
    """A sparsified model as SparseDetector leaves it: sparse convs + the settings."""

    def __init__(self, method='srste'):
        super().__init__()
        torch.manual_seed(0)
        self.conv = SparseConv2d.convert_from(nn.Conv2d(16, 8, 3, padding=1), 2, 8,
                                              method=method)
        setattr(self, SETTINGS_ATTR, SparsitySettings(method=method, n=2, m=8))


def _runner(model, optimizer=None, **kwargs):
    wrapper = OptimWrapper(optimizer) if optimizer is not None else None
    return types.SimpleNamespace(model=model, optim_wrapper=wrapper, **kwargs)


def _decay_setup(fused):
    model = TinySparse()
    conv = model.conv
    optimizer = torch.optim.SGD([conv.weight, conv.bias], lr=0.0, fused=fused)
    hook = SRSTEDecayHook(decay=0.5)
    hook.before_train(_runner(model, optimizer))
    seen = {}

    def record(opt, args, kwargs):  # registered after the decay hook: sees the final grad
        seen['grad'] = conv.weight.grad.clone()
        seen['scale'] = getattr(opt, 'grad_scale', None)

    optimizer.register_step_pre_hook(record)
    return model, conv, optimizer, hook, seen


@pytest.mark.parametrize('fused', [False, True])
def test_decay_equals_lambda_w_on_pruned_weights_after_unscaling(fused):
    # A fused optimizer unscales inside its own step: GradScaler hands it the still-scaled
    # gradients with the scale in optimizer.grad_scale. The decay must come out the same.
    model, conv, optimizer, hook, seen = _decay_setup(fused)
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 16)
    x = torch.randn(2, 16, 5, 5)
    loss = conv(x).sum()
    scaler.scale(loss).backward()
    scaled = conv.weight.grad.clone()
    scaler.step(optimizer)
    decay = 0.5 * (1 - conv.mask.clamp(0, 1)) * conv.weight.detach()
    assert (seen['scale'] is not None) == fused  # unscaled before the step unless fused
    final = seen['grad'] / seen['scale'] if fused else seen['grad']
    torch.testing.assert_close(final, scaled / 2.0 ** 16 + decay)
    pruned = conv.mask == 0
    torch.testing.assert_close((final - scaled / 2.0 ** 16)[pruned],
                               0.5 * conv.weight.detach()[pruned])
    hook.after_train(None)
    assert not hook._handles


def test_decay_applies_to_maxq_layers_too():
    model = TinySparse(method='maxq')
    conv = model.conv
    optimizer = torch.optim.SGD([conv.weight], lr=0.0)
    SRSTEDecayHook(decay=1e-2).before_train(_runner(model, optimizer))
    conv(torch.randn(1, 16, 5, 5)).sum().backward()
    before = conv.weight.grad.clone()
    optimizer.step()
    expected = before + 1e-2 * (1 - conv.mask.clamp(0, 1)) * conv.weight.detach()
    torch.testing.assert_close(conv.weight.grad, expected)


def test_schedule_unit_follows_the_train_loop():
    hook = SparsityScheduleHook(kind='linear', start=0, end=8)
    iter_loop = IterBasedTrainLoop.__new__(IterBasedTrainLoop)
    epoch_loop = EpochBasedTrainLoop.__new__(EpochBasedTrainLoop)
    model = TinySparse()
    # An iteration-based run of 100 iterations (max_epochs is 1 there): counts iterations.
    hook.before_train(_runner(model, train_loop=iter_loop, max_epochs=1, max_iters=100))
    with pytest.raises(ValueError, match=r'end=8 is past the training length \(max_epochs=6'):
        hook.before_train(_runner(model, train_loop=epoch_loop, max_epochs=6, max_iters=600))
    hook.before_train(_runner(model, train_loop=epoch_loop, max_epochs=12, max_iters=600))
    forced = SparsityScheduleHook(kind='linear', start=0, end=8, by_epoch=True)
    with pytest.raises(ValueError, match='max_epochs=1'):
        forced.before_train(_runner(model, train_loop=iter_loop, max_epochs=1, max_iters=100))


def test_other_hooks_read_the_rate_the_schedule_gives_the_current_step():
    iter_loop = IterBasedTrainLoop.__new__(IterBasedTrainLoop)
    epoch_loop = EpochBasedTrainLoop.__new__(EpochBasedTrainLoop)
    hook = SparsityScheduleHook(kind='linear', start=0, end=10)
    by_iter = _runner(TinySparse(), train_loop=iter_loop, epoch=1, iter=3, hooks=[hook])
    by_epoch = _runner(TinySparse(), train_loop=epoch_loop, epoch=1, iter=3, hooks=[hook])
    assert not hook.counts_epochs(by_iter) and hook.counts_epochs(by_epoch)
    assert scheduled_preserve_rate(by_iter) == hook.current_rate(by_iter) == pytest.approx(0.7)
    assert scheduled_preserve_rate(by_epoch) == pytest.approx(0.9)
    assert scheduled_preserve_rate(_runner(TinySparse(), hooks=[])) is None


def test_schedule_hook_sets_the_rate_without_tensor_work():
    model = TinySparse(method='maxq')
    hub = types.SimpleNamespace(scalars={})
    hub.update_scalar = lambda key, value: hub.scalars.__setitem__(key, value)
    runner = _runner(model, train_loop=IterBasedTrainLoop.__new__(IterBasedTrainLoop),
                     epoch=0, iter=3, max_iters=10, message_hub=hub)
    calls = []
    model.conv.compute_mask = lambda *a, **k: calls.append(1)
    hook = SparsityScheduleHook(kind='linear', start=0, end=10)
    hook.before_train(runner)  # looks the model up once, as the Runner calls it
    hook.before_train_iter(runner, 3)
    assert model.conv.preserve == pytest.approx(0.7) and calls == []
    assert hub.scalars['train/preserve_rate'] == pytest.approx(0.7)


def test_device_aware_ddp_does_not_broadcast_buffers():
    import inspect
    default = inspect.signature(DeviceAwareDDP.__init__).parameters['broadcast_buffers'].default
    assert default is False


def test_hook_argument_checks():
    with pytest.raises(ValueError, match="unknown schedule kind 'step'; valid kinds are"):
        SparsityScheduleHook(kind='step')
    with pytest.raises(ValueError, match=r'start must be <= end, got start=5, end=2'):
        SparsityScheduleHook(start=5, end=2)
    with pytest.raises(ValueError, match='by_epoch must be True, False or None'):
        SparsityScheduleHook(by_epoch='yes')
    with pytest.raises(ValueError, match='decay must be a positive number'):
        SRSTEDecayHook(decay=0)
    with pytest.raises(ValueError, match='interval must be an integer >= 1'):
        SparsityLoggerHook(interval=0)


def test_hooks_refuse_a_plain_detector():
    runner = types.SimpleNamespace(model=nn.Conv2d(3, 3, 1))
    with pytest.raises(TypeError, match="needs a sparse model.*type='SparseDetector'"):
        SparsityScheduleHook().before_train(runner)


def test_decay_is_a_fixed_number_of_foreach_ops():
    """The decay pre-hook dispatches the same few ops whatever the number of layers."""
    from ..sparsity.test_sync_free import OpRecorder
    counts = []
    for layers in (4, 16):
        convs = [SparseConv2d(16, 8, 3, n=2, m=8, device='meta') for _ in range(layers)]
        for conv in convs:
            conv.weight.grad = torch.zeros_like(conv.weight)
        decay = SRSTEDecayHook(decay=1e-3)._make_hook(convs)
        scale = torch.ones((), device='meta')
        with OpRecorder() as recorder:
            decay(types.SimpleNamespace(grad_scale=scale), (), {})
        assert recorder.host_reads() == []
        counts.append(len(recorder.ops()))
    assert counts[0] == counts[1] <= 12, counts


class TinySparseLinear(nn.Module):
    """A sparsified model with one SparseLinear (the transformer layers' type)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = SparseLinear.convert_from(nn.Linear(16, 8), 2, 4, method='maxq')
        setattr(self, SETTINGS_ATTR, SparsitySettings(method='maxq', n=2, m=4))


@pytest.mark.parametrize('make, expected', [
    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), 'grad'),
    (lambda p: torch.optim.Adam(p, lr=0.1), 'decoupled'),
    (lambda p: torch.optim.AdamW(p, lr=0.1), 'decoupled'),
    (lambda p: torch.optim.AdamW(p, lr=0.1, fused=True), 'decoupled'),
    (lambda p: torch.optim.RAdam(p, lr=0.1), 'decoupled'),  # by its betas
])
def test_auto_mode_follows_the_optimizer(make, expected):
    model = TinySparseLinear()
    hook = SRSTEDecayHook(decay=1e-2)
    assert hook.mode == 'auto'
    hook.before_train(_runner(model, make(model.parameters())))
    assert hook.modes == [expected]
    forced = SRSTEDecayHook(decay=1e-2, mode='grad')
    forced.before_train(_runner(model, make(model.parameters())))
    assert forced.modes == ['grad']
    hook.after_train(None)
    forced.after_train(None)


def _adamw_reference(weight, grad, lr):
    """One plain AdamW step (weight_decay 0) of a copy of ``weight`` with ``grad``."""
    ref = nn.Parameter(weight.detach().clone())
    ref.grad = grad.clone()
    torch.optim.AdamW([ref], lr=lr, weight_decay=0.0).step()
    return ref.detach()


@pytest.mark.parametrize('fused', [False, True])
def test_decoupled_decay_under_adamw_is_lr_times_decay_times_w(fused):
    """W <- W * (1 - lr * decay * (1 - clamp(S, 0, 1))), then AdamW's update, per group lr."""
    model = TinySparseLinear()
    fc = model.fc
    lr, decay = 0.05, 0.5
    optimizer = torch.optim.AdamW([dict(params=[fc.weight], lr=lr),
                                   dict(params=[fc.bias], lr=lr)], weight_decay=0.0,
                                  fused=fused)
    hook = SRSTEDecayHook(decay=decay)
    hook.before_train(_runner(model, optimizer))
    assert hook.modes == ['decoupled']
    optimizer.param_groups[0]['lr'] = 2 * lr  # as an MMEngine scheduler would set it
    fc(torch.randn(3, 16)).square().sum().backward()
    w0, grad, mask = fc.weight.detach().clone(), fc.weight.grad.clone(), fc.mask.clone()
    assert (mask == 0).sum() == w0.numel() // 2  # 2:4 at preserve rate 0: half pruned
    optimizer.step()
    decayed = w0 * (1 - 2 * lr * decay * (1 - mask.clamp(0, 1)))
    torch.testing.assert_close(fc.weight.detach(), _adamw_reference(decayed, grad, 2 * lr))
    # The gradient itself is untouched (the grad-mode term is not added).
    torch.testing.assert_close(fc.weight.grad, grad)
    hook.after_train(None)


@pytest.mark.parametrize('fused', [False, True])
def test_decoupled_decay_skips_steps_amp_skips(fused):
    """A step GradScaler skips for non-finite gradients decays nothing: an ordinary optimizer
    is not stepped (no hook runs), a fused one is stepped with optimizer.found_inf = 1."""
    model = TinySparseLinear()
    fc = model.fc
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.0, fused=fused)
    SRSTEDecayHook(decay=0.5).before_train(_runner(model, optimizer))
    scaler = torch.amp.GradScaler('cpu', init_scale=2.0 ** 4)
    scaler.scale(fc(torch.randn(3, 16)).sum()).backward()
    fc.weight.grad[0, 0] = float('inf')
    before = fc.weight.detach().clone()
    scaler.step(optimizer)
    scaler.update()
    torch.testing.assert_close(fc.weight.detach(), before, rtol=0, atol=0)
    # The next, finite step decays again.
    optimizer.zero_grad()
    scaler.scale(fc(torch.randn(3, 16)).sum()).backward()
    scaler.step(optimizer)
    assert not torch.equal(fc.weight.detach(), before)


def test_decoupled_decay_is_a_fixed_number_of_foreach_ops():
    from ..sparsity.test_sync_free import OpRecorder
    counts = []
    for count in (4, 16):
        layers = [SparseLinear(16, 8, n=2, m=4, device='meta') for _ in range(count)]
        for layer in layers:
            layer.weight.grad = torch.zeros_like(layer.weight)
        hook = SRSTEDecayHook(decay=1e-3, mode='decoupled')._make_decoupled_hook(layers)
        optimizer = types.SimpleNamespace(
            param_groups=[dict(params=[layer.weight for layer in layers], lr=1e-3)],
            found_inf=torch.zeros((), device='meta'))
        with OpRecorder() as recorder:
            hook(optimizer, (), {})
        assert recorder.host_reads() == []
        counts.append(len(recorder.ops()))
    assert counts[0] == counts[1] <= 12, counts


def test_decay_mode_is_checked():
    with pytest.raises(ValueError, match=r"mode must be one of \('auto', 'grad', 'decoupled'\), "
                                         r"got 'sgd'"):
        SRSTEDecayHook(mode='sgd')

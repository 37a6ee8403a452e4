"""Pruned-weight (SR-STE) decay, applied between AMP unscaling and the optimizer step."""
from typing import List

import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapperDict

from mmdet_maxq.models.sparsify import sparse_layers
from mmdet_maxq.sparsity import srste_decay_
from mmdet_maxq.sparsity.validation import check_decay
from .utils import get_sparse_model


@HOOKS.register_module()
class SRSTEDecayHook(Hook):
    """Add ``decay * (1 - clamp(S, 0, 1)) * W`` to the gradient of every sparse layer weight.

    The paper's training loop applies this decay of the pruned weights to every sparse layer,
    MaxQ as well as SR-STE (MaxQ = soft masks + this decay), so every sparse config of this
    project includes the hook.

    The term is added by an optimizer step pre-hook, so it runs on every rank after DDP has
    averaged the gradients. With ``--amp`` and an ordinary optimizer, ``GradScaler`` has
    unscaled the gradients before ``step()``. A fused optimizer (``fused=True``, which
    declares ``_step_supports_amp_scaling``) receives them still scaled and unscales inside
    its own step, with the scale in ``optimizer.grad_scale``: the term is then multiplied by
    that scale (a tensor op, no host-device synchronisation), so the decay the weights get is
    the same either way. Steps that AMP skips for non-finite gradients apply no decay.

    Args:
        decay (float): The lambda of the decay. Defaults to 2e-4.
    """

    priority = 'NORMAL'

    def __init__(self, decay: float = 2e-4):
        try:
            check_decay(decay, 'decay')
        except ValueError as err:
            raise ValueError(f'SRSTEDecayHook: {err}') from None
        self.decay = float(decay)
        self._handles: List = []

    def before_train(self, runner) -> None:
        model = get_sparse_model(runner, type(self).__name__)
        layers = [layer for _, layer in sparse_layers(model)]
        if not layers:
            raise ValueError('SRSTEDecayHook: the model has no sparse layer (sparsity.method '
                             "'dense'?); remove the hook or use method 'srste' / 'maxq'")
        wrapper = runner.optim_wrapper
        wrappers = wrapper.values() if isinstance(wrapper, OptimWrapperDict) else [wrapper]
        self._remove_handles()
        for optim_wrapper in wrappers:
            optimizer = optim_wrapper.optimizer
            owned = {id(p) for group in optimizer.param_groups for p in group['params']}
            mine = [conv for conv in layers if id(conv.weight) in owned]
            if mine:
                self._handles.append(optimizer.register_step_pre_hook(self._make_hook(mine)))

    def _make_hook(self, layers):
        # The model is looked up once (before_train); each step is a few foreach ops.
        weights = [conv.weight for conv in layers]

        @torch.no_grad()
        def decay_hook(optimizer, args, kwargs):
            # Set by GradScaler.step for optimizers that unscale inside step(); None once the
            # gradients were unscaled (or without AMP).
            scale = getattr(optimizer, 'grad_scale', None)
            srste_decay_(weights, [conv.mask for conv in layers], self.decay, scale=scale)

        return decay_hook

    def _remove_handles(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def after_train(self, runner) -> None:
        self._remove_handles()

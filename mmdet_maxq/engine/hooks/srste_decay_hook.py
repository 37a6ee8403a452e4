"""Pruned-weight (SR-STE) decay: added to the gradient (SGD) or decoupled (Adam family)."""
from typing import List, Optional

import torch
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.optim import OptimWrapperDict

from mmdet_maxq.models.sparsify import sparse_layers
from mmdet_maxq.sparsity import srste_decay_
from mmdet_maxq.sparsity.validation import check_decay
from .utils import get_sparse_model

DECAY_MODES = ('auto', 'grad', 'decoupled')


def is_adam_family(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` scales each gradient by a second-moment estimate (Adam, AdamW,
    their fused / foreach variants, and optimizers of other packages with ``betas``)."""
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return True
    return any('betas' in group for group in optimizer.param_groups)


@HOOKS.register_module()
class SRSTEDecayHook(Hook):
    """Decay the pruned weights of every sparse layer: ``decay * (1 - clamp(S, 0, 1)) * W``.

    The paper's training loop applies this decay of the pruned weights to every sparse layer,
    MaxQ as well as SR-STE (MaxQ = soft masks + this decay), so every sparse config of this
    project includes the hook. It has two forms:

    - ``mode='grad'``: the term is **added to the gradient** before the optimizer step, as
      the paper does with SGD. Under SGD it then moves ``W`` by ``lr * decay * W`` on the
      pruned weights, the SR-STE update.
    - ``mode='decoupled'``: the weights themselves are decayed at each step,
      ``W -= lr * decay * (1 - clamp(S, 0, 1)) * W`` with the ``lr`` of the weight's
      param group at that step (MMEngine's schedulers write ``group['lr']``; ``lr_mult`` is
      in it), before the optimizer's own update, the way AdamW applies its weight decay.
      Adam and AdamW divide the gradient by ``sqrt(v)``, the running RMS of that weight's
      gradient: a term added to the gradient is rescaled per weight (a pruned weight with
      small gradients gets a decay step of about ``lr`` whatever its size, one with large
      gradients almost none), so it no longer is the decay SR-STE defines. Decoupled, the
      pruned weights shrink by the factor ``1 - lr * decay`` per step under any optimizer.
    - ``mode='auto'`` (the default): ``decoupled`` for the Adam family (``torch.optim.Adam``,
      ``AdamW``, fused or not, and any optimizer whose param groups have ``betas``),
      ``grad`` otherwise (SGD: the paper's recipe, unchanged).

    Both run in an optimizer step pre-hook, so on every rank after DDP has averaged the
    gradients, a few ``torch._foreach_*`` ops per param group, no host-device
    synchronisation. With ``--amp`` and an ordinary optimizer, ``GradScaler`` has unscaled
    the gradients before ``step()`` and skips ``step()`` (and so this hook) on non-finite
    gradients. A fused optimizer (``fused=True``, which declares
    ``_step_supports_amp_scaling``) is always stepped: it receives the gradients still scaled,
    with the scale in ``optimizer.grad_scale`` and the skip flag in ``optimizer.found_inf``.
    In ``grad`` mode the term is then multiplied by the scale; in ``decoupled`` mode by
    ``1 - found_inf`` (tensor ops), so a step AMP skips applies no decay in either mode.
    Weights without a gradient (not in the loss) are not decayed, as the optimizers skip them.

    Args:
        decay (float): The lambda of the decay. Defaults to 2e-4.
        mode (str): ``'auto'``, ``'grad'`` or ``'decoupled'`` (see above). Defaults to
            ``'auto'``.
    """

    priority = 'NORMAL'

    def __init__(self, decay: float = 2e-4, mode: str = 'auto'):
        try:
            check_decay(decay, 'decay')
        except ValueError as err:
            raise ValueError(f'SRSTEDecayHook: {err}') from None
        if mode not in DECAY_MODES:
            raise ValueError(f'SRSTEDecayHook: mode must be one of {DECAY_MODES}, got {mode!r}')
        self.decay = float(decay)
        self.mode = mode
        self.modes: List[str] = []  # the mode chosen per optimizer (before_train)
        self._handles: List = []

    def resolve_mode(self, optimizer: torch.optim.Optimizer) -> str:
        """The mode used with ``optimizer``: ``mode``, or under ``'auto'`` what it picks."""
        if self.mode != 'auto':
            return self.mode
        return 'decoupled' if is_adam_family(optimizer) else 'grad'

    def before_train(self, runner) -> None:
        model = get_sparse_model(runner, type(self).__name__)
        layers = [layer for _, layer in sparse_layers(model)]
        if not layers:
            raise ValueError('SRSTEDecayHook: the model has no sparse layer (sparsity.method '
                             "'dense'?); remove the hook or use method 'srste' / 'maxq'")
        wrapper = runner.optim_wrapper
        wrappers = wrapper.values() if isinstance(wrapper, OptimWrapperDict) else [wrapper]
        self._remove_handles()
        self.modes = []
        for optim_wrapper in wrappers:
            optimizer = optim_wrapper.optimizer
            owned = {id(p) for group in optimizer.param_groups for p in group['params']}
            mine = [layer for layer in layers if id(layer.weight) in owned]
            if not mine:
                continue
            mode = self.resolve_mode(optimizer)
            self.modes.append(mode)
            print_log(f'SRSTEDecayHook: pruned-weight decay {self.decay:g} on {len(mine)} '
                      f'sparse layers, {mode} ({type(optimizer).__name__})', logger='current')
            make = self._make_hook if mode == 'grad' else self._make_decoupled_hook
            self._handles.append(optimizer.register_step_pre_hook(make(mine)))

    def _make_hook(self, layers):
        # The model is looked up once (before_train); each step is a few foreach ops.
        weights = [layer.weight for layer in layers]

        @torch.no_grad()
        def decay_hook(optimizer, args, kwargs):
            # Set by GradScaler.step for optimizers that unscale inside step(); None once the
            # gradients were unscaled (or without AMP).
            scale = getattr(optimizer, 'grad_scale', None)
            srste_decay_(weights, [layer.mask for layer in layers], self.decay, scale=scale)

        return decay_hook

    def _make_decoupled_hook(self, layers):
        by_weight = {id(layer.weight): layer for layer in layers}

        @torch.no_grad()
        def decoupled_hook(optimizer, args, kwargs):
            # Set by GradScaler.step for fused optimizers, which are stepped even when the
            # gradients are not finite (their kernels skip the update): then no decay either.
            found_inf: Optional[torch.Tensor] = getattr(optimizer, 'found_inf', None)
            for group in optimizer.param_groups:
                pairs = [(p, by_weight[id(p)]) for p in group['params']
                         if id(p) in by_weight and p.grad is not None]
                if pairs:
                    decoupled_decay_([p for p, _ in pairs], [layer.mask for _, layer in pairs],
                                     group['lr'], self.decay, found_inf)

        return decoupled_hook

    def _remove_handles(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def after_train(self, runner) -> None:
        self._remove_handles()


@torch.no_grad()
def decoupled_decay_(weights: List[torch.Tensor], masks: List[torch.Tensor], lr, decay: float,
                     found_inf: Optional[torch.Tensor] = None) -> None:
    """``W -= lr * decay * (1 - clamp(S, 0, 1)) * W`` in place for every weight.

    Args:
        weights (list[Tensor]): The weights (one param group's).
        masks (list[Tensor]): Their masks ``S``.
        lr (float | Tensor): The group's learning rate.
        decay (float): The lambda.
        found_inf (Tensor, optional): GradScaler's 0-d skip flag (1 on a skipped step): the
            decay is multiplied by ``1 - found_inf``.
    """
    factors = torch._foreach_clamp_min(masks, 0)
    torch._foreach_clamp_max_(factors, 1)
    torch._foreach_neg_(factors)
    torch._foreach_add_(factors, 1)  # 1 - clamp(S, 0, 1)
    if isinstance(lr, torch.Tensor):
        torch._foreach_mul_(factors, -decay)
        torch._foreach_mul_(factors, lr)
    else:
        torch._foreach_mul_(factors, -float(lr) * decay)
    if found_inf is not None:
        torch._foreach_mul_(factors, 1 - found_inf.to(factors[0].dtype))
    torch._foreach_add_(factors, 1)  # 1 - lr * decay * (1 - clamp(S, 0, 1))
    if any(f.dtype != w.dtype for f, w in zip(factors, weights)):
        factors = [f.to(w.dtype) for f, w in zip(factors, weights)]
    torch._foreach_mul_(weights, factors)

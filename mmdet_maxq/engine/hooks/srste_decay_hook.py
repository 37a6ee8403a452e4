"""SR-STE decay of the pruned weights, applied between AMP unscaling and the optimizer step."""
from typing import List

from mmengine.hooks import Hook
from mmengine.optim import OptimWrapperDict
from mmdet.registry import HOOKS

from mmdet_maxq.sparsity import srste_decay_
from .utils import get_sparse_detector


@HOOKS.register_module()
class SRSTEDecayHook(Hook):
    """Add ``decay * (1 - clamp(S, 0, 1)) * W`` to the gradient of every sparse conv weight.

    The term is added by an optimizer step pre-hook, so it runs on every rank after DDP has
    averaged the gradients and after ``GradScaler`` has unscaled them (``--amp``), and never on
    steps that AMP skips for non-finite gradients.

    Args:
        decay (float): The SR-STE lambda. Defaults to 2e-4.
    """

    priority = 'NORMAL'

    def __init__(self, decay: float = 2e-4):
        if not isinstance(decay, (int, float)) or not decay > 0:
            raise ValueError(f'SRSTEDecayHook: decay must be a positive number, got {decay!r}')
        self.decay = float(decay)
        self._handles: List = []

    def before_train(self, runner) -> None:
        layers = get_sparse_detector(runner, type(self).__name__).sparse_layers()
        if not layers:
            raise ValueError('SRSTEDecayHook: the model has no sparse conv (sparsity.method '
                             "'dense'?); remove the hook or use method 'srste' / 'maxq'")
        wrapper = runner.optim_wrapper
        wrappers = wrapper.values() if isinstance(wrapper, OptimWrapperDict) else [wrapper]

        self._handles = []
        for optim_wrapper in wrappers:
            optimizer = optim_wrapper.optimizer
            owned = {id(p) for group in optimizer.param_groups for p in group['params']}
            mine = [conv for conv in layers if id(conv.weight) in owned]
            if mine:
                self._handles.append(optimizer.register_step_pre_hook(self._make_hook(mine)))

    def _make_hook(self, layers):

        def decay_hook(optimizer, args, kwargs):
            for conv in layers:
                srste_decay_(conv.weight, conv.mask, self.decay)

        return decay_hook

    def after_train(self, runner) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

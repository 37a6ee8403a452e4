"""Re-estimate the BN running statistics on the sparse forward before training starts."""
from typing import Callable, Iterable, List, Optional, Tuple

import torch
import torch.nn as nn
from mmdet.registry import HOOKS
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import Hook
from torch.nn.modules.batchnorm import _BatchNorm

from mmdet_maxq.models.sparsify import set_preserve_rate
from .sparsity_schedule_hook import scheduled_preserve_rate
from .utils import get_sparse_model, starts_afresh


def batch_norms(model: nn.Module) -> List[Tuple[str, _BatchNorm]]:
    """``(name, module)`` of every BN layer of ``model`` that tracks running statistics."""
    return [(name, mod) for name, mod in model.named_modules()
            if isinstance(mod, _BatchNorm) and mod.track_running_stats]


@torch.no_grad()
def recalibrate_batch_norms(model: nn.Module, forward: Callable[[object], object],
                            batches: Iterable, num_batches: int) -> int:
    """Replace every BN layer's running statistics by those of ``model``'s forward on
    ``batches``: their plain average over ``num_batches`` batches.

    Everything else runs in eval mode (a sparse conv computes its mask once from its weights
    at its current preserve rate); only the BN layers normalise with batch statistics while
    they accumulate. Their affine weight and bias and their ``requires_grad`` are unchanged;
    training / eval modes and momenta are restored afterwards.

    Args:
        model (nn.Module): The model whose BN layers are re-estimated.
        forward (callable): Runs ``model`` on one batch (e.g. preprocess, then
            ``model(**data, mode='tensor')``).
        batches (Iterable): Data batches, each passed to ``forward``.
        num_batches (int): How many batches to average over (fewer when ``batches`` ends).

    Returns:
        int: The number of batches used.
    """
    norms = batch_norms(model)
    modes = {name: mod.training for name, mod in model.named_modules()}
    momenta = {name: bn.momentum for name, bn in norms}
    used = 0
    try:
        model.eval()
        for _, bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average: the plain mean over batches
            bn.train()
        for batch in batches:
            if used >= num_batches:
                break
            forward(batch)
            used += 1
    finally:
        for name, bn in norms:
            bn.momentum = momenta[name]
        for name, mod in model.named_modules():
            mod.training = modes[name]
    return used


def _tensor_forward(model: nn.Module) -> Callable[[object], object]:
    """One data batch through ``model``'s preprocessor and its ``mode='tensor'`` forward."""

    def forward(batch):
        data = model.data_preprocessor(batch, training=False)
        if isinstance(data, dict):
            return model(**data, mode='tensor')
        return model(*data, mode='tensor')

    return forward


@HOOKS.register_module()
class BNRecalibrationHook(Hook):
    """Make the frozen BN statistics describe the sparse model's first forward.

    A sparse model started from a dense checkpoint computes with ``W * S`` from its first
    iteration, and ``S`` is not 1 even at preserve rate 1: MaxQ's soft multipliers
    ``1 + F + P`` amplify every weight above its filter's / kernel position's threshold
    (about 1.5x the output std for a 1x1 conv at 2:8, 2-3x for a 3x3 conv). With BN in train
    mode that is absorbed within a few iterations; with MMDetection's frozen BN
    (``norm_eval=True``) the statistics stay the dense model's and no longer match. Before the
    first training iteration this hook sets every sparse conv to the schedule's first preserve
    rate, runs ``num_batches`` training batches through the model (no gradients) and replaces
    each BN layer's running mean and variance by their average over those batches. Under DDP
    the statistics are averaged over the processes, so every rank keeps the same ones.

    Nothing is done when training resumes or continues past iteration 0 (the checkpoint's
    statistics already describe the sparse model), nor at ``num_batches=0``.

    Args:
        num_batches (int): Training batches to average the statistics over. Defaults to 50.
    """

    # After the weights are loaded (before_train follows init_weights and load_from).
    priority = 'ABOVE_NORMAL'

    def __init__(self, num_batches: int = 50):
        if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 0:
            raise ValueError(f'BNRecalibrationHook: num_batches must be an integer >= 0, '
                             f'got {num_batches!r}')
        self.num_batches = num_batches
        self.used: Optional[int] = None

    def before_train(self, runner) -> None:
        model = get_sparse_model(runner, type(self).__name__)
        if self.num_batches == 0 or not starts_afresh(runner):
            return
        preserve = scheduled_preserve_rate(runner)
        if preserve is not None:
            set_preserve_rate(model, preserve)
        self.used = recalibrate_batch_norms(model, _tensor_forward(model),
                                            runner.train_dataloader, self.num_batches)
        if get_world_size() > 1:
            for _, bn in batch_norms(model):
                all_reduce(bn.running_mean, op='mean')
                all_reduce(bn.running_var, op='mean')
        runner.logger.info(
            f'BNRecalibrationHook: re-estimated the running statistics of '
            f'{len(batch_norms(model))} BN layers on the sparse forward (preserve rate '
            f'{preserve if preserve is not None else "as set"}) over {self.used} training '
            'batches')

"""Log N:M sparsity figures through MMEngine's MessageHub."""
from collections import defaultdict
from typing import Dict, Optional

import torch
import torch.nn as nn
from mmdet.registry import HOOKS
from mmengine.hooks import Hook

from mmdet_maxq.models.sparsify import sparse_layers
from mmdet_maxq.sparsity import nm_figures
from mmdet_maxq.utils.names import stage_prefix
from .utils import get_sparse_model


@torch.no_grad()
def sparsity_figures(model: nn.Module) -> Dict[str, float]:
    """Share of N:M blocks over all sparse layers (convs and linear layers) and the weight
    sparsity of each stage (:func:`~mmdet_maxq.utils.names.stage_prefix`).

    Figures are of the effective weights ``W * S`` of the last forward (nothing recomputed),
    from :func:`~mmdet_maxq.sparsity.nm_figures`. They read values back to the host (once per
    layer): call them at a logging interval, not every iteration.
    """
    zeros, total = defaultdict(int), defaultdict(int)
    nm_blocks = all_blocks = 0
    for name, layer in sparse_layers(model):
        figures = nm_figures(layer.weight, layer.n, layer.m, mask=layer.mask)
        nm_blocks += figures.nm_blocks
        all_blocks += figures.blocks
        stage = stage_prefix(name)
        zeros[stage] += figures.zeros
        total[stage] += figures.numel
    figures = {'sparsity/nm_blocks': nm_blocks / all_blocks if all_blocks else 0.0}
    figures.update({f'sparsity/{stage}': zeros[stage] / total[stage] for stage in total})
    return figures


@HOOKS.register_module()
class SparsityLoggerHook(Hook):
    """Put sparsity figures into the MessageHub every ``interval`` training iterations.

    Logged (under ``train/``, so the logger and every visualizer backend such as TensorBoard or
    W&B show them): ``sparsity/nm_blocks``, the share of weight blocks that are N:M, and
    ``sparsity/<stage>``, the share of zero weights of the sparse convs and linear layers per
    stage (e.g. ``backbone.layer1``, ``backbone.stages.0``).

    Args:
        interval (int): Iterations between two measurements; match the ``LoggerHook``
            interval. Defaults to 50.
    """

    priority = 'NORMAL'

    def __init__(self, interval: int = 50):
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f'SparsityLoggerHook: interval must be an integer >= 1, '
                             f'got {interval!r}')
        self.interval = interval
        self.model: Optional[nn.Module] = None  # the sparse model, looked up in before_train

    def before_train(self, runner) -> None:
        self.model = get_sparse_model(runner, type(self).__name__)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not (self.every_n_train_iters(runner, self.interval) or self.is_last_train_iter(runner)):
            return
        for key, value in sparsity_figures(self.model).items():
            runner.message_hub.update_scalar(f'train/{key}', value)

"""Incremental N:M sparsity schedule: the preserve rate of every iteration."""
from typing import Dict, Optional

import torch.nn as nn
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.runner import IterBasedTrainLoop

from mmdet_maxq.models.sparsify import set_preserve_rate, sparsity_meta
from mmdet_maxq.sparsity.schedules import check_schedule, preserve_rate
from .utils import get_sparse_model


@HOOKS.register_module()
class SparsityScheduleHook(Hook):
    """Set the preserve rate of the schedule before every training iteration.

    The preserve rate ``p`` (share of weight blocks still exempt from N:M) follows
    ``preserve_rate(kind, step, start, end)``, where ``step`` is the epoch or the iteration.
    The sparse convs recompute their masks from the current weights in every training forward
    (and once after each switch to eval mode), so every DDP rank computes the same masks and
    this hook only sets the rate: a few Python assignments, no tensor work. ``p`` is logged as
    ``preserve_rate``; the checkpoint's ``meta`` carries the schedule position, and a resumed
    run (or a test of a mid-schedule checkpoint) continues with it. It also carries the
    sparsity settings and the sparse layers' names (``meta['sparsity']``): checkpoints hold
    no masks, and :func:`mmdet_maxq.checkpoint.checkpoint_masks` recomputes them from that.

    Args:
        kind (str): ``'linear'``, ``'cubic'``, ``'cos'`` or ``'exp'``. Defaults to ``'cubic'``.
        start (int): Step where sparsification starts (p = 1 before). Defaults to 0.
        end (int): Step from which every block is N:M (p = 0). ``start == end == 0`` means
            full N:M from the first step. Defaults to 0.
        by_epoch (bool, optional): Count ``start``/``end`` in epochs (True) or iterations
            (False). Defaults to None: epochs under an epoch-based train loop, iterations
            under an ``IterBasedTrainLoop``.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, kind: str = 'cubic', start: int = 0, end: int = 0,
                 by_epoch: Optional[bool] = None):
        try:
            check_schedule(kind, start, end)
        except ValueError as err:
            raise ValueError(f'SparsityScheduleHook: {err}') from None
        if by_epoch is not None and not isinstance(by_epoch, bool):
            raise ValueError(f'SparsityScheduleHook: by_epoch must be True, False or None '
                             f'(follow the train loop), got {by_epoch!r}')
        self.kind, self.start, self.end, self.by_epoch = kind, start, end, by_epoch
        self.preserve: Optional[float] = None
        self.model: Optional[nn.Module] = None  # the sparse model, looked up in before_train

    def counts_epochs(self, runner) -> bool:
        """Whether ``start`` and ``end`` count epochs (else iterations) under ``runner``."""
        if self.by_epoch is not None:
            return self.by_epoch
        return not isinstance(runner.train_loop, IterBasedTrainLoop)

    def before_train(self, runner) -> None:
        self.model = get_sparse_model(runner, type(self).__name__)
        by_epoch = self.counts_epochs(runner)
        total = runner.max_epochs if by_epoch else runner.max_iters
        unit = 'max_epochs' if by_epoch else 'max_iters'
        if self.end > total:
            raise ValueError(
                f'SparsityScheduleHook: end={self.end} is past the training length ({unit}='
                f'{total}), counted in {"epochs" if by_epoch else "iterations"}: the model '
                f'would finish partly dense. Set end <= {total}, train longer, or set by_epoch')

    def rate_at(self, step: int) -> float:
        """The schedule's preserve rate at ``step``."""
        return preserve_rate(self.kind, step, self.start, self.end)

    def current_rate(self, runner) -> float:
        """The preserve rate of ``runner``'s current epoch or iteration (:meth:`counts_epochs`)."""
        return self.rate_at(runner.epoch if self.counts_epochs(runner) else runner.iter)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self.preserve = self.current_rate(runner)
        set_preserve_rate(self.model, self.preserve)
        runner.message_hub.update_scalar('train/preserve_rate', self.preserve)

    def state(self) -> Dict:
        return dict(kind=self.kind, start=self.start, end=self.end, by_epoch=self.by_epoch,
                    preserve=self.preserve)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.setdefault('meta', {})
        meta['sparsity_schedule'] = self.state()
        meta['sparsity'] = sparsity_meta(get_sparse_model(runner, type(self).__name__))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get('meta', {}).get('sparsity_schedule')
        if saved is None or saved.get('preserve') is None:
            return
        self.preserve = float(saved['preserve'])
        # Called before the weights are loaded; the masks follow from them at the next forward.
        set_preserve_rate(get_sparse_model(runner, type(self).__name__), self.preserve)


def scheduled_preserve_rate(runner) -> Optional[float]:
    """The preserve rate ``runner``'s :class:`SparsityScheduleHook` gives its current step (the
    first one, before training), or None when it has no such hook."""
    for hook in runner.hooks:
        if isinstance(hook, SparsityScheduleHook):
            return hook.current_rate(runner)
    return None

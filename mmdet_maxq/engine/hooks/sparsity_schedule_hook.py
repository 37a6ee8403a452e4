"""Incremental N:M sparsity schedule and per-iteration mask refresh."""
from typing import Dict, Optional

from mmengine.hooks import Hook
from mmdet.registry import HOOKS

from mmdet_maxq.sparsity import SCHEDULE_KINDS, preserve_rate
from .utils import get_sparse_detector


@HOOKS.register_module()
class SparsityScheduleHook(Hook):
    """Set the preserve rate of the schedule and recompute the masks before every iteration.

    The preserve rate ``p`` (share of weight blocks still exempt from N:M) follows
    ``preserve_rate(kind, step, start, end)``, where ``step`` is the epoch (``by_epoch=True``)
    or the iteration. Masks are a function of the weights and ``p``, so every DDP rank computes
    the same masks. After each step the masks are brought up to date with the new weights, so
    checkpoints and validation see ``S(W)`` of the saved weights. ``p`` is logged as
    ``preserve_rate``; the checkpoint's ``meta`` carries the schedule position, and a resumed
    run continues with it.

    Args:
        kind (str): ``'linear'``, ``'cubic'``, ``'cos'`` or ``'exp'``. Defaults to ``'cubic'``.
        start (int): Step where sparsification starts (p = 1 before). Defaults to 0.
        end (int): Step from which every block is N:M (p = 0). ``start == end == 0`` means
            full N:M from the first step. Defaults to 0.
        by_epoch (bool): Count ``start``/``end`` in epochs, else in iterations.
            Defaults to True.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, kind: str = 'cubic', start: int = 0, end: int = 0,
                 by_epoch: bool = True):
        if kind not in SCHEDULE_KINDS:
            raise ValueError(f'SparsityScheduleHook: kind must be one of {SCHEDULE_KINDS}, '
                             f'got {kind!r}')
        for name, value in (('start', start), ('end', end)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f'SparsityScheduleHook: {name} must be an integer >= 0, '
                                 f'got {value!r}')
        if start > end:
            raise ValueError(f'SparsityScheduleHook: start ({start}) must be <= end ({end})')
        self.kind, self.start, self.end, self.by_epoch = kind, start, end, by_epoch
        self.preserve: Optional[float] = None

    def before_train(self, runner) -> None:
        get_sparse_detector(runner, type(self).__name__)
        total = runner.max_epochs if self.by_epoch else runner.max_iters
        unit = 'max_epochs' if self.by_epoch else 'max_iters'
        if self.end > total:
            raise ValueError(
                f'SparsityScheduleHook: end={self.end} is past the training length ({unit}='
                f'{total}): the model would finish partly dense. Set end <= {total} or train '
                'longer')

    def rate_at(self, step: int) -> float:
        """The schedule's preserve rate at ``step``."""
        return preserve_rate(self.kind, step, self.start, self.end)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        step = runner.epoch if self.by_epoch else runner.iter
        self.preserve = self.rate_at(step)
        get_sparse_detector(runner, type(self).__name__).set_preserve_rate(self.preserve)
        runner.message_hub.update_scalar('train/preserve_rate', self.preserve)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        # Masks of the stepped weights, before CheckpointHook (VERY_LOW) saves them and before
        # validation uses them; the next before_train_iter finds them current (same weight
        # version and rate) and skips the work, so this costs nothing extra per iteration.
        get_sparse_detector(runner, type(self).__name__).set_preserve_rate(self.preserve)

    def state(self) -> Dict:
        return dict(kind=self.kind, start=self.start, end=self.end, by_epoch=self.by_epoch,
                    preserve=self.preserve)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})['sparsity_schedule'] = self.state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get('meta', {}).get('sparsity_schedule')
        if saved is None or saved.get('preserve') is None:
            return
        self.preserve = float(saved['preserve'])
        # The checkpoint carries the masks: keep them, only restore the rate they were made at.
        model = get_sparse_detector(runner, type(self).__name__)
        for conv in model.sparse_layers():
            conv.preserve = self.preserve

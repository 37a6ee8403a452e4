"""Carry the random number generators' state through checkpoints for ``--resume``."""
import numbers
import random
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS

from .utils import resuming

# The meta keys this hook writes into a checkpoint.
STATE_KEY = 'random_state'  # {rank: {'python', 'numpy', 'torch'[, 'cuda']}}
SAMPLER_KEY = 'sampler_seed'  # the train sampler's seed (shuffle order)


# Registered in MMEngine's root registry, the parent of MMDetection's and mmpretrain's: a runner
# of either scope (``default_scope='mmdet'`` or ``'mmpretrain'``) finds it.
@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save every rank's Python, numpy and torch (CPU and CUDA) RNG states and the train
    sampler's seed with each checkpoint, and restore them when training resumes.

    A resumed run then continues the random streams of the interrupted one (data augmentation,
    the sampler's shuffle, proposal sampling, dropout): on deterministic kernels it trains to
    the same weights, masks and optimizer state as the run left alone, with or without a fixed
    ``randomness.seed``, in one process or under DDP.

    How: ``Runner.resume`` loads the checkpoint (``after_load_checkpoint``: the states are kept
    here) and then re-seeds every generator from the checkpoint's seed, and the train sampler
    was built before the resume with a seed of its own (drawn afresh when the config sets none).
    So the states are put back once MMEngine is done: the sampler's seed in ``before_train``, the
    generators in the first ``before_train_epoch``, before the first batch is loaded. For the
    same reason an uninterrupted run starts each epoch that follows an epoch-end checkpoint
    from the states saved in it, so that validation in between (whose loader draws from the
    torch stream) does not move the training streams: resumed or not, the epoch starts alike.

    DDP: MMEngine writes a checkpoint on rank 0 only, so at the epochs (iterations) where the
    ``CheckpointHook`` saves, every rank first sends its states to rank 0 (one
    ``all_gather_object``, this hook's priority being above the ``CheckpointHook``'s); there is
    no collective and no host-device synchronisation at any other iteration. On resume each rank
    takes its own entry. A checkpoint written at another point (``save_best`` after validation)
    holds the saving rank's states only; the other ranks then keep MMEngine's re-seeding and log
    that they do.

    Only a resume restores the state: loading weights (``load_from``, ``tools/test.py``) keeps
    the configured seed. ``Runner.resume`` loads with ``map_location`` on the training device, so
    the saved states may arrive as CUDA tensors; they are moved back to the CPU ``ByteTensor``
    that ``set_rng_state`` takes.

    Not restored: the random streams of dataloader worker processes (``num_workers > 0``), which
    MMEngine's ``worker_init_fn`` seeds when the workers start and whose progress is not saved;
    and, in an iteration-based loop, MMEngine's resume re-loads the batches it skips, which
    draws augmentation numbers from the restored streams (see ``configs/maxq/README.md``).
    """

    priority = 'NORMAL'  # above the CheckpointHook's 'VERY_LOW': the gather runs before it saves

    def __init__(self) -> None:
        # States gathered from every rank for the checkpoint about to be written, keyed by the
        # (epoch, iter) at which they were taken.
        self._gathered: Optional[Tuple[Tuple[int, int], Dict[int, dict]]] = None
        # What a resume loaded, put back once MMEngine has re-seeded.
        self._resumed_state: Optional[dict] = None
        self._resumed_sampler_seed: Optional[int] = None
        # This rank's states at the last epoch-end checkpoint, for the next epoch's start.
        self._rewind: Optional[dict] = None

    # -- saving ------------------------------------------------------------------------------

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if _checkpoint_saves_now(runner, by_epoch=False):
            self._gather(runner)

    def after_train_epoch(self, runner) -> None:
        if _checkpoint_saves_now(runner, by_epoch=True):
            # The next epoch starts from these states, here as in a run resumed from this
            # checkpoint: what runs in between (validation draws its loader's seed from the
            # torch stream) leaves the training streams alone.
            self._rewind = self._gather(runner)

    def _gather(self, runner) -> dict:
        """Collect every rank's states on every rank (a no-op collective in one process);
        return this rank's."""
        state = _current_state()
        if get_world_size() > 1:
            states = dict(enumerate(all_gather_object(state)))
        else:
            states = {runner.rank: state}
        self._gathered = ((runner.epoch, runner.iter), states)
        return state

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        position = (runner.epoch, runner.iter)
        if self._gathered is not None and self._gathered[0] == position:
            states = self._gathered[1]
        else:  # a checkpoint saved elsewhere (save_best, a user's call): this rank's only
            states = {runner.rank: _current_state()}
        self._gathered = None
        meta = checkpoint.setdefault('meta', {})
        meta[STATE_KEY] = states
        seed = _train_sampler_seed(runner)
        if seed is not None:
            meta[SAMPLER_KEY] = seed

    # -- resuming ----------------------------------------------------------------------------

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not resuming(runner):
            return  # weights only (load_from / test): keep the configured seed
        meta = checkpoint.get('meta', {})
        states = meta.get(STATE_KEY) or {}
        self._resumed_state = states.get(runner.rank)
        self._resumed_sampler_seed = meta.get(SAMPLER_KEY)
        if self._resumed_state is None:
            runner.logger.warning(f'RandomStateHook: the checkpoint has no random state for rank '
                                  f'{runner.rank} (it has ranks {sorted(states)}); the resumed '
                                  'run re-seeds this rank instead')

    def before_train(self, runner) -> None:
        if self._resumed_sampler_seed is None:
            return
        sampler = _train_sampler(runner.train_loop)
        if sampler is None:
            runner.logger.warning('RandomStateHook: the train dataloader has no sampler with a '
                                  'seed; its order after the resume is its own')
        else:
            # DefaultSampler reads it at each epoch's shuffle, InfiniteSampler when its index
            # stream starts (at the first batch): both after this point.
            sampler.seed = self._resumed_sampler_seed
        self._resumed_sampler_seed = None

    def before_train_epoch(self, runner) -> None:
        state = self._resumed_state if self._resumed_state is not None else self._rewind
        self._resumed_state = self._rewind = None
        _set_state(state)


def _set_state(state: Optional[dict]) -> None:
    """Put this process's generators back to ``state`` (None: leave them)."""
    if state is None:
        return
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(_cpu_byte_tensor(state['torch']))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_cpu_byte_tensor(s) for s in state['cuda']])


def _current_state() -> dict:
    """This process's generator states, as ``before_save_checkpoint`` stores them."""
    state = dict(python=random.getstate(), numpy=np.random.get_state(),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _train_sampler(loop):
    """The seeded sampler of a train loop's dataloader, or None.

    With a batch sampler (MMDetection's ``AspectRatioBatchSampler``) the seeded sampler is
    ``dataloader.batch_sampler.sampler`` and ``dataloader.sampler`` is PyTorch's default
    sequential one; MMEngine's ``DistSamplerSeedHook`` looks in the same two places.
    """
    dataloader = getattr(loop, 'dataloader', None)
    for sampler in (getattr(dataloader, 'sampler', None),
                    getattr(getattr(dataloader, 'batch_sampler', None), 'sampler', None)):
        if hasattr(sampler, 'seed'):
            return sampler
    return None


def _train_sampler_seed(runner) -> Optional[int]:
    """The seed of the train dataloader's sampler, or None if it has none (or no loop yet)."""
    loop = getattr(runner, '_train_loop', None)
    if loop is None or isinstance(loop, dict):
        return None  # not built: a checkpoint saved outside training
    seed = getattr(_train_sampler(loop), 'seed', None)
    # A drawn seed (no randomness.seed) is a numpy integer (np.random.randint).
    return int(seed) if isinstance(seed, numbers.Integral) else None


def _checkpoint_saves_now(runner, by_epoch: bool) -> bool:
    """Whether a ``CheckpointHook`` of ``runner`` writes a checkpoint at this point.

    Its own condition (``after_train_epoch`` for ``by_epoch=True``, ``after_train_iter``
    otherwise), read from the registered hook: a plain host-side computation on counters.

    Args:
        runner: The runner.
        by_epoch (bool): True at ``after_train_epoch``, False at ``after_train_iter``.
    """
    for hook in runner.hooks:
        if not isinstance(hook, CheckpointHook) or hook.by_epoch != by_epoch:
            continue
        if by_epoch:
            due = hook.every_n_epochs(runner, hook.interval, hook.save_begin)
            last = hook.is_last_train_epoch(runner)
        else:
            due = hook.every_n_train_iters(runner, hook.interval, hook.save_begin)
            last = hook.is_last_train_iter(runner)
        if due or (hook.save_last and last):
            return True
    return False


def _cpu_byte_tensor(state: torch.Tensor) -> torch.Tensor:
    """An RNG state as ``set_rng_state`` takes it, wherever ``map_location`` put it."""
    return state.to(device='cpu', dtype=torch.uint8)

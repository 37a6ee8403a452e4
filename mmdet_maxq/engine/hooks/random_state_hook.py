"""Carry the random number generators' state through checkpoints for ``--resume``."""
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmdet.registry import HOOKS


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save the Python, numpy and torch (CPU and CUDA) RNG states with each checkpoint and
    restore them when training resumes.

    MMEngine re-seeds a resumed run from ``randomness.seed``, so proposal sampling and data
    augmentation draw other numbers than the uninterrupted run would have. With this hook the
    resumed run continues the saved random streams, and (on deterministic kernels, with no
    validation between the checkpoint and the interruption) trains to the same weights and
    masks as an uninterrupted run.

    Only a resume restores the state: loading weights (``load_from``, ``tools/test.py``) keeps
    the configured seed. MMEngine's ``Runner.resume`` loads with ``map_location`` on the
    training device, so the saved states may arrive as CUDA tensors; they are moved back to
    the CPU ``ByteTensor`` that ``set_rng_state`` takes.

    MMEngine writes checkpoints from rank 0 only (``Runner.save_checkpoint`` is master-only),
    so the state saved is rank 0's; in a multi-process run the other ranks keep MMEngine's
    re-seeding on resume and log that they do.
    """

    priority = 'NORMAL'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = dict(python=random.getstate(), numpy=np.random.get_state(),
                     torch=torch.get_rng_state())
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state['cuda'] = torch.cuda.get_rng_state_all()
        checkpoint.setdefault('meta', {})['random_state'] = {runner.rank: state}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not getattr(runner, '_resume', False):
            return  # weights only (load_from / test): keep the configured seed
        states = checkpoint.get('meta', {}).get('random_state') or {}
        state = states.get(runner.rank)
        if state is None:
            runner.logger.warning('RandomStateHook: the checkpoint has no random state for rank '
                                  f'{runner.rank}; the resumed run re-seeds instead')
            return
        random.setstate(state['python'])
        np.random.set_state(state['numpy'])
        torch.set_rng_state(_cpu_byte_tensor(state['torch']))
        if 'cuda' in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([_cpu_byte_tensor(s) for s in state['cuda']])


def _cpu_byte_tensor(state: torch.Tensor) -> torch.Tensor:
    """An RNG state as ``set_rng_state`` takes it, wherever ``map_location`` put it."""
    return state.to(device='cpu', dtype=torch.uint8)

"""Carry the random number generators' state through checkpoints."""
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmdet.registry import HOOKS


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save the Python, numpy and torch (CPU and CUDA) RNG states with each checkpoint and
    restore them on ``--resume``.

    MMEngine re-seeds a resumed run from ``randomness.seed``, so proposal sampling and data
    augmentation draw other numbers than the uninterrupted run would have. With this hook the
    resumed run continues the saved random streams, and (on deterministic kernels, with no
    validation between the checkpoint and the interruption) trains to the same weights and
    masks as an uninterrupted run.

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
        states = checkpoint.get('meta', {}).get('random_state') or {}
        state = states.get(runner.rank)
        if state is None:
            runner.logger.warning('RandomStateHook: the checkpoint has no random state for rank '
                                  f'{runner.rank}; the resumed run re-seeds instead')
            return
        random.setstate(state['python'])
        np.random.set_state(state['numpy'])
        torch.set_rng_state(state['torch'])
        if 'cuda' in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])

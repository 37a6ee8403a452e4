"""The masks of a sparse model's checkpoint, recomputed from its weights (plain PyTorch).

Checkpoints of sparse models hold the weights and, under ``meta['sparsity']``, what the masks
depend on (method, N:M, tau, the sparse layers' names; written by ``SparsityScheduleHook``);
``meta['sparsity_schedule']['preserve']`` is the preserve rate the run was at.
"""
from typing import Dict, Mapping, Optional

import torch

from mmdet_maxq.sparsity import maxq_mask, nm_mask
from .formats import CheckpointError


def checkpoint_masks(checkpoint: Mapping, preserve: Optional[float] = None
                     ) -> Dict[str, torch.Tensor]:
    """``{layer name: mask}`` of every sparse layer of a training checkpoint.

    Args:
        checkpoint (Mapping): A loaded MMEngine checkpoint (``state_dict`` and ``meta``).
        preserve (float, optional): The preserve rate to compute the masks at. Defaults to
            the rate the checkpoint was saved at (0 when it does not say).

    Returns:
        dict: One mask per sparse layer, of its weight's shape (empty for method ``dense``).

    Raises:
        CheckpointError: The checkpoint has no ``meta['sparsity']`` (not saved by a sparse
            run with ``SparsityScheduleHook``) or lacks a sparse layer's weight.
    """
    meta = checkpoint.get('meta') or {}
    settings = meta.get('sparsity')
    if not settings:
        raise CheckpointError(
            "the checkpoint has no meta['sparsity'] (the sparse layers and their N:M): it was "
            'not saved by a sparse training run with SparsityScheduleHook; build the model '
            'from its config and load the checkpoint instead')
    if preserve is None:
        preserve = (meta.get('sparsity_schedule') or {}).get('preserve') or 0.0
    state = checkpoint['state_dict']
    masks = {}
    if settings['method'] == 'dense':
        return masks
    for name in settings['layers']:
        weight = state.get(name + '.weight')
        if not isinstance(weight, torch.Tensor):
            raise CheckpointError(f'the checkpoint lists {name} as sparse but has no '
                                  f'{name}.weight; it is damaged or was edited')
        if settings['method'] == 'maxq':
            masks[name] = maxq_mask(weight, settings['n'], settings['m'], preserve,
                                    settings['tau'], name=name)
        else:
            masks[name] = nm_mask(weight, settings['n'], settings['m'], preserve, name=name)
    return masks

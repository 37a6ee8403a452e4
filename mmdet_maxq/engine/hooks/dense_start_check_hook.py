"""Warn when a dense checkpoint starts a fine-tune that is fully N:M from its first step."""
import os.path as osp
import pickle
from typing import Dict, List, Tuple

from mmdet.registry import HOOKS
from mmengine.hooks import Hook

from mmdet_maxq.checkpoint.file_check import checkpoint_meta
from mmdet_maxq.models.sparsify import sparse_layers
from mmdet_maxq.utils.config_utils import pretrained_inits
from .sparsity_schedule_hook import scheduled_preserve_rate
from .utils import get_sparse_model, starts_afresh


@HOOKS.register_module()
class DenseStartCheckHook(Hook):
    """Warn (or refuse) when the sparse layers were loaded from a dense checkpoint while the
    schedule makes every block N:M from the first iteration (``start == end == 0``).

    Pruning a dense model (``torchvision://resnet50``, a plain mmpretrain model) to full N:M
    at once discards most of its weights, and its frozen BN statistics no longer match. The
    check sees both what was loaded (a state-dict pre-hook on every sparse layer, registered
    in ``before_run``, before the weights are loaded) and the schedule (in ``before_train``).
    A checkpoint counts as sparse when its ``meta`` says so: a sparse training run
    (``SparseClassifier`` pretraining, ``SparseDetector``) records its sparse layers under
    ``meta['sparsity']``, a ``tools/convert_checkpoint.py`` output whether its source was
    sparse (it carried masks, or its weights are N:M). The layers that a ``Pretrained`` init
    (or ``load_from``) loads from such a local file count as sparse, and so do layers loaded
    with a ``mask`` entry (checkpoints of earlier versions). A conversion of a sparse source
    without masks and without N:M weights (e.g. raw torchvision-layout weights) cannot be told
    from a dense one and gets the warning.

    Args:
        refuse (bool): Raise a ``ValueError`` instead of warning. Defaults to False.
    """

    priority = 'NORMAL'

    def __init__(self, refuse: bool = False):
        if not isinstance(refuse, bool):
            raise ValueError(f'DenseStartCheckHook: refuse must be True or False, got {refuse!r}')
        self.refuse = refuse
        self.loaded: Dict[str, bool] = {}  # layer name -> its state dict carried a mask
        self._handles: List = []

    def before_run(self, runner) -> None:
        model = get_sparse_model(runner, type(self).__name__)
        for name, conv in sparse_layers(model):
            self._handles.append(conv.register_load_state_dict_pre_hook(
                self._make_recorder(name)))

    def _make_recorder(self, name: str):

        def record(module, state_dict, prefix, *args):
            if prefix + 'weight' in state_dict:
                self.loaded[name] = prefix + 'mask' in state_dict

        return record

    def before_train(self, runner) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if not starts_afresh(runner):
            return
        if scheduled_preserve_rate(runner) != 0.0:
            return  # incremental: the preserve rate starts above 0
        sparse_sources = _sparse_sources(runner.cfg)
        dense = [name for name, masked in self.loaded.items()
                 if not masked and not name.startswith(sparse_sources)]
        if not dense:
            return
        message = (
            f'DenseStartCheckHook: {len(dense)} sparse layers (e.g. {dense[0]!r}) were loaded '
            'from a checkpoint that is not sparse (no meta[\'sparsity\'], no N:M masks: a dense '
            'checkpoint?), and the schedule makes every block N:M from the first iteration '
            '(SparsityScheduleHook start == end == 0). '
            'Start from a sparse ImageNet checkpoint (the one a SparseClassifier config writes, '
            'configs/imagenet/), or use an *-incremental config (preserve rate 1 -> 0 with BN '
            'recalibration) for a dense backbone')
        if self.refuse:
            raise ValueError(message)
        runner.logger.warning(message)


def _local_meta(path: str) -> dict:
    """The ``meta`` of a local checkpoint file; ``{}`` for remote, missing or unreadable ones
    (MMEngine's loading reports those)."""
    path = osp.expanduser(path)
    if not osp.isfile(path):
        return {}
    try:
        return checkpoint_meta(path)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError):
        return {}


def _is_sparse(meta: dict) -> bool:
    """Whether a checkpoint's ``meta`` says its weights come from a sparse model."""
    if (meta.get('sparsity') or {}).get('layers'):
        return True  # a sparse training run (SparsityScheduleHook writes it)
    return meta.get('converter') == 'mmdet_maxq.checkpoint.convert' and (
        meta.get('masked_layers', 0) > 0 or bool(meta.get('nm_sparse')))


def _sparse_sources(cfg) -> Tuple[str, ...]:
    """Module-name prefixes (``'backbone.'``; ``''`` for the whole model) that a ``Pretrained``
    init or ``load_from`` loads from a local checkpoint of a sparse model."""
    prefixes = []
    for key, path in pretrained_inits(cfg.get('model'), 'model'):
        if _is_sparse(_local_meta(path)):
            prefixes.append(key[len('model.'):-len('init_cfg.checkpoint')])
    load_from = cfg.get('load_from')
    if isinstance(load_from, str) and _is_sparse(_local_meta(load_from)):
        prefixes.append('')
    return tuple(prefixes)

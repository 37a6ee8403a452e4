"""Warn when a dense checkpoint starts a fine-tune that is fully N:M from its first step."""
import os.path as osp
import pickle
from typing import Dict, List, Tuple

from mmdet.registry import HOOKS
from mmengine.hooks import Hook

from mmdet_maxq.checkpoint.file_check import checkpoint_meta
from mmdet_maxq.models.sparsify import sparse_layers
from mmdet_maxq.utils.config_utils import pretrained_inits
from .bn_recalibration_hook import BNRecalibrationHook
from .utils import get_sparse_model


@HOOKS.register_module()
class DenseStartCheckHook(Hook):
    """Warn (or refuse) when the sparse convs were loaded from a checkpoint without masks while
    the schedule makes every block N:M from the first iteration (``start == end == 0``).

    A checkpoint written by a sparse model (``SparseClassifier`` pretraining,
    ``SparseDetector``) names its sparse layers in ``meta['sparsity']`` (older ones carry a
    ``mask`` beside each sparse weight); a dense checkpoint (``torchvision://resnet50``, a
    plain mmpretrain model) has neither. Pruning a dense
    model to full N:M at once discards most of its weights, and its frozen BN statistics no
    longer match. The check sees both what was loaded (a state-dict pre-hook on every sparse
    conv, registered in ``before_run``, before the weights are loaded) and the schedule (in
    ``before_train``). Checkpoints written by ``tools/convert_checkpoint.py`` hold raw
    weights without masks; their ``meta`` says whether the source was sparse (it carried masks,
    or its weights are N:M), so the layers a ``Pretrained`` init loads from such a conversion
    count as sparse. A conversion of a sparse source without masks and without N:M weights
    (e.g. raw torchvision-layout weights) cannot be told from a dense one and gets the warning.

    Args:
        refuse (bool): Raise a ``ValueError`` instead of warning. Defaults to False.
    """

    priority = 'NORMAL'

    def __init__(self, refuse: bool = False):
        if not isinstance(refuse, bool):
            raise ValueError(f'DenseStartCheckHook: refuse must be True or False, got {refuse!r}')
        self.refuse = refuse
        self.loaded: Dict[str, bool] = {}  # layer name -> its checkpoint carried a mask
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
        if runner.iter > 0 or getattr(runner, '_resume', False):
            return
        if BNRecalibrationHook.first_preserve_rate(runner) != 0.0:
            return  # incremental: the preserve rate starts above 0
        sparse_sources = _sparse_conversions(runner.cfg.get('model'))
        dense = [name for name, masked in self.loaded.items()
                 if not masked and not name.startswith(sparse_sources)]
        if not dense:
            return
        message = (
            f'DenseStartCheckHook: {len(dense)} sparse convs (e.g. {dense[0]!r}) were loaded '
            'from a checkpoint without N:M masks (a dense checkpoint?), and the schedule makes '
            'every block N:M from the first iteration (SparsityScheduleHook start == end == 0). '
            'Start from a sparse ImageNet checkpoint (the one a SparseClassifier config writes, '
            'configs/imagenet/), or use an *-incremental config (preserve rate 1 -> 0 with BN '
            'recalibration) for a dense backbone')
        if self.refuse:
            raise ValueError(message)
        runner.logger.warning(message)


def _sparse_conversions(model_cfg) -> Tuple[str, ...]:
    """Module-name prefixes (``'backbone.'``) that a ``Pretrained`` init loads from a sparse
    source: a checkpoint a sparse model wrote (its masks are not saved; ``meta['sparsity']``
    names its sparse layers) or a ``tools/convert_checkpoint.py`` output of a sparse source
    (masked or N:M)."""
    prefixes = []
    for key, path in pretrained_inits(model_cfg, 'model'):
        path = osp.expanduser(path)
        if not osp.isfile(path):
            continue  # remote (torchvision://, URLs) or missing: nothing to read here
        try:
            meta = checkpoint_meta(path)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError):
            continue  # unreadable: MMEngine's Pretrained init reports it
        written_sparse = isinstance(meta.get('sparsity'), dict) and \
            bool(meta['sparsity'].get('layers'))
        converted_sparse = meta.get('converter') == 'mmdet_maxq.checkpoint.convert' and (
            meta.get('masked_layers', 0) > 0 or meta.get('nm_sparse'))
        if written_sparse or converted_sparse:
            module = key[len('model.'):-len('init_cfg.checkpoint')]
            prefixes.append(module)
    return tuple(prefixes)

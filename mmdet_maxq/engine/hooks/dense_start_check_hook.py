"""Warn when a dense checkpoint starts a fine-tune that is fully N:M from its first step."""
from typing import Dict, List

from mmdet.registry import HOOKS
from mmengine.hooks import Hook

from mmdet_maxq.models.sparsify import sparse_convs
from .bn_recalibration_hook import BNRecalibrationHook
from .utils import get_sparse_model


@HOOKS.register_module()
class DenseStartCheckHook(Hook):
    """Warn (or refuse) when the sparse convs were loaded from a checkpoint without masks while
    the schedule makes every block N:M from the first iteration (``start == end == 0``).

    A checkpoint written by a sparse model (``SparseClassifier`` pretraining,
    ``SparseDetector``) carries a ``mask`` beside each sparse conv weight; a dense
    checkpoint (``torchvision://resnet50``, a plain mmpretrain model) does not. Pruning a dense
    model to full N:M at once discards most of its weights, and its frozen BN statistics no
    longer match. The check sees both what was loaded (a state-dict pre-hook on every sparse
    conv, registered in ``before_run``, before the weights are loaded) and the schedule (in
    ``before_train``). Checkpoints converted by ``tools/convert_checkpoint.py`` keep raw
    weights without masks too: for those the warning is expected when the source really was a
    sparse model.

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
        for name, conv in sparse_convs(model):
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
        dense = [name for name, masked in self.loaded.items() if not masked]
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

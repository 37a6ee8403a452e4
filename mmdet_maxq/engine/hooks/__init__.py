from mmpretrain.registry import HOOKS as PRETRAIN_HOOKS

from .bn_recalibration_hook import BNRecalibrationHook
from .dense_start_check_hook import DenseStartCheckHook
from .random_state_hook import RandomStateHook
from .sparsity_logger_hook import SparsityLoggerHook
from .sparsity_schedule_hook import SparsityScheduleHook
from .srste_decay_hook import SRSTEDecayHook

__all__ = ['BNRecalibrationHook', 'DenseStartCheckHook', 'RandomStateHook',
           'SparsityLoggerHook', 'SparsityScheduleHook', 'SRSTEDecayHook']

# Registries are per toolbox: a runner whose default scope is mmpretrain (sparse ImageNet
# pretraining) looks in mmpretrain's HOOKS and its parent, MMEngine's, never in MMDetection's.
for _hook in (BNRecalibrationHook, DenseStartCheckHook, RandomStateHook, SparsityLoggerHook,
              SparsityScheduleHook, SRSTEDecayHook):
    PRETRAIN_HOOKS.register_module(module=_hook)

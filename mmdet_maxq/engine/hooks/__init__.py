from .random_state_hook import RandomStateHook
from .sparsity_logger_hook import SparsityLoggerHook
from .sparsity_schedule_hook import SparsityScheduleHook
from .srste_decay_hook import SRSTEDecayHook

__all__ = ['RandomStateHook', 'SparsityLoggerHook', 'SparsityScheduleHook', 'SRSTEDecayHook']

"""MaxQ N:M sparsity in plain PyTorch (no OpenMMLab import): masks, schedules, STEs, reports."""
from .masks import axis_query, hard_nm_keep, maxq_mask, nm_mask
from .report import is_nm_sparse, layer_summary, nm_compliance
from .schedules import SCHEDULE_KINDS, preserve_rate
from .ste import HardSTE, SoftSTE, apply_mask, srste_decay_, srste_decay_term
from .validation import check_nm, is_nm_eligible

__all__ = [
    'axis_query', 'hard_nm_keep', 'maxq_mask', 'nm_mask', 'is_nm_sparse', 'layer_summary',
    'nm_compliance', 'SCHEDULE_KINDS', 'preserve_rate', 'HardSTE', 'SoftSTE', 'apply_mask',
    'srste_decay_', 'srste_decay_term', 'check_nm', 'is_nm_eligible'
]

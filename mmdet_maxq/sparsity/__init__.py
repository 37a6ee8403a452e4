"""MaxQ N:M sparsity in plain PyTorch (no OpenMMLab import); see "The mask" in docs/design.md.

- :mod:`.masks`: ``nm_mask`` (hard N:M), ``maxq_mask`` (``S = L * (1 + F + P)``);
- :mod:`.schedules`: ``preserve_rate`` and ``SCHEDULE_KINDS``;
- :mod:`.ste`: ``SoftSTE`` / ``HardSTE`` / ``apply_mask``, SR-STE decay;
- :mod:`.report`: ``nm_figures`` (every N:M figure of a weight), ``is_nm_sparse``,
  ``nm_compliance``;
- :mod:`.validation`: ``check_nm``, ``is_nm_eligible`` and the shared argument checks;
- :mod:`.batched`: ``PackedMasks``, the masks of many weights in one packed computation;
- :mod:`.semi_structured`: the 2:4 speed path of a deployed model (``to_semi_structured``),
  imported on its own.
"""
from .masks import axis_query, hard_nm_keep, maxq_mask, nm_mask
from .report import NMFigures, is_nm_sparse, nm_compliance, nm_figures
from .schedules import SCHEDULE_KINDS, preserve_rate
from .ste import HardSTE, SoftSTE, apply_mask, srste_decay_, srste_decay_term
from .validation import check_finite, check_nm, is_nm_eligible

__all__ = [
    'nm_mask', 'maxq_mask', 'axis_query', 'hard_nm_keep', 'preserve_rate', 'SCHEDULE_KINDS',
    'SoftSTE', 'HardSTE', 'apply_mask', 'srste_decay_', 'srste_decay_term', 'is_nm_sparse',
    'nm_compliance', 'nm_figures', 'NMFigures', 'check_nm', 'check_finite', 'is_nm_eligible'
]

"""``model.type='SparseDetector'``: any MMDetection detector, its convs made N:M sparse in place.

A config makes a detector sparse by changing its type and naming the detector class::

    model = dict(type='SparseDetector', detector='FasterRCNN',
                 sparsity=dict(method='maxq', n=2, m=8, layers=['backbone.*']))

merged over the detector's own config (``_base_``). The mechanism is
:func:`mmdet_maxq.models.sparse_model.build_sparse_model`, shared with ``SparseClassifier``.
"""
from typing import Optional, Union

import torch.nn as nn
from mmdet.registry import MODELS

from .sparse_model import build_sparse_model


@MODELS.register_module(name='SparseDetector')
def build_sparse_detector(detector: Union[str, dict, None] = None,
                          sparsity: Optional[dict] = None,
                          **detector_cfg) -> nn.Module:
    """Build ``detector`` and replace its selected convs and linear layers, in place.

    Args:
        detector (str | dict, optional): The detector's registered type (e.g.
            ``'FasterRCNN'``), its other arguments given beside it (``backbone=...``,
            ``neck=...``), or a whole detector config dict. Defaults to None (an error).
        sparsity (dict, optional): See :class:`SparsitySettings`, e.g.
            ``dict(method='maxq', n=2, m=8, layers=['backbone.*'])``. Defaults to MaxQ 2:4 on
            every eligible backbone conv.
        **detector_cfg: The detector's arguments (when ``detector`` is a type name).

    Returns:
        nn.Module: The detector, with ``sparsity_settings`` and ``sparsify_report`` set.
    """
    return build_sparse_model(MODELS, 'detector', 'SparseDetector', detector, sparsity,
                              **detector_cfg)

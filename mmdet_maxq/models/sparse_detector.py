"""``model.type='SparseDetector'``: any MMDetection detector, its convs made N:M sparse in place.

A config makes a detector sparse by changing its type and naming the detector class::

    model = dict(type='SparseDetector', detector='FasterRCNN',
                 sparsity=dict(method='maxq', n=2, m=8, layers=['backbone.*']))

merged over the detector's own config (``_base_``), so ``model.backbone``, ``model.neck``, ...
stay where MMDetection's tools (``init_detector``, ``DetInferencer``, analysis tools) look
for them. What is built is the detector itself (a ``FasterRCNN``, a ``YOLOX``, ...): the same
class, methods and attributes, so MMDetection's hooks that use them (``YOLOXModeSwitchHook``,
``SetEpochInfoHook``, ``MeanTeacherHook``, ``EMAHook``) work unchanged, and its checkpoint
keys are the detector's own plus one ``mask`` buffer per sparse conv. A plain detector
checkpoint loads into it with MMEngine's usual key report (masks follow from the weights).
"""
from typing import Optional, Union

import torch.nn as nn
from mmengine.logging import print_log
from mmdet.registry import MODELS

from .sparsify import SparsitySettings, sparsify


@MODELS.register_module(name='SparseDetector')
def build_sparse_detector(detector: Union[str, dict, None] = None,
                          sparsity: Optional[dict] = None,
                          **detector_cfg) -> nn.Module:
    """Build ``detector`` and replace its selected convs by ``SparseConv2d``, in place.

    Args:
        detector (str | dict): The detector's registered type (e.g. ``'FasterRCNN'``), its
            other arguments given beside it (``backbone=...``, ``neck=...``), or a whole
            detector config dict.
        sparsity (dict, optional): See :class:`SparsitySettings`, e.g.
            ``dict(method='maxq', n=2, m=8, layers=['backbone.*'])``. Defaults to MaxQ 2:4 on
            every eligible backbone conv.
        **detector_cfg: The detector's arguments (when ``detector`` is a type name).

    Returns:
        nn.Module: The detector, with ``sparsity_settings`` and ``sparsify_report`` set.
    """
    if 'architecture' in detector_cfg:
        raise ValueError(
            'model.architecture is not a SparseDetector argument any more: the detector is '
            "sparsified in place. Write model=dict(type='SparseDetector', detector='FasterRCNN', "
            'sparsity=...) merged over the detector config (its backbone, neck, ... stay as '
            'they are), or detector=dict(type=..., ...) with a whole detector config')
    if isinstance(detector, str):
        cfg = dict(type=detector, **detector_cfg)
    elif isinstance(detector, dict):
        if detector_cfg:
            raise ValueError(
                f'model.detector is a whole detector config, so {sorted(detector_cfg)} beside '
                'it are ambiguous; move them into model.detector or give detector as a type name')
        cfg = dict(detector)
    else:
        raise ValueError(
            'model.detector is missing: name the detector class, e.g. '
            "model=dict(type='SparseDetector', detector='FasterRCNN', sparsity=dict(...)) "
            f'(got detector={detector!r})')
    settings = SparsitySettings.from_cfg(sparsity)
    model = MODELS.build(cfg)
    report = sparsify(model, settings)
    model.sparsify_report = report
    print_log(f'SparseDetector: {type(model).__name__} with method={settings.method} '
              f'{settings.n}:{settings.m} on patterns {list(settings.layers)}; '
              + report.summary(), logger='current')
    return model

"""``model.type='SparseClassifier'``: any mmpretrain classifier, its convs made N:M sparse in
place (sparse ImageNet pretraining).

A config makes a classifier sparse by changing its type and naming the classifier class::

    model = dict(type='SparseClassifier', classifier='ImageClassifier',
                 sparsity=dict(method='maxq', n=2, m=8))

merged over an mmpretrain classifier config (``mmpretrain::resnet/resnet50_8xb32_in1k.py``).
The default ``layers=['backbone.*']`` makes every N:M-eligible backbone conv sparse: the
3-channel stem stays dense (not eligible), the head's ``fc`` is a linear layer (dense), and
depthwise convs (one input channel per group) stay dense; ResNet downsample convs and
MobileNetV2's pointwise convs are sparse. The checkpoint's ``backbone.*`` keys (plus masks)
initialise a ``SparseDetector``'s ResNet directly. Same mechanism as ``SparseDetector``:
:func:`mmdet_maxq.models.sparse_model.build_sparse_model`.
"""
from typing import Optional, Union

import torch.nn as nn
from mmpretrain.registry import MODELS

from .sparse_model import build_sparse_model


@MODELS.register_module(name='SparseClassifier')
def build_sparse_classifier(classifier: Union[str, dict, None] = None,
                            sparsity: Optional[dict] = None,
                            **classifier_cfg) -> nn.Module:
    """Build ``classifier`` and replace its selected convs and linear layers, in place.

    Args:
        classifier (str | dict, optional): The classifier's registered type (e.g.
            ``'ImageClassifier'``), its other arguments given beside it (``backbone=...``,
            ``head=...``), or a whole classifier config dict. Defaults to None (an error).
        sparsity (dict, optional): See :class:`SparsitySettings`. Defaults to MaxQ 2:4 on
            every eligible backbone conv.
        **classifier_cfg: The classifier's arguments (when ``classifier`` is a type name).

    Returns:
        nn.Module: The classifier, with ``sparsity_settings`` and ``sparsify_report`` set.
    """
    return build_sparse_model(MODELS, 'classifier', 'SparseClassifier', classifier, sparsity,
                              **classifier_cfg)

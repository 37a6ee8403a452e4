"""One builder behind ``SparseDetector`` and ``SparseClassifier``: a model of another toolbox,
its convs and linear layers made N:M sparse in place.

A config makes a model sparse by changing its type and naming the model class::

    model = dict(type='SparseDetector', detector='FasterRCNN',
                 sparsity=dict(method='maxq', n=2, m=8, layers=['backbone.*']))
    model = dict(type='SparseClassifier', classifier='ImageClassifier',
                 sparsity=dict(method='maxq', n=2, m=8))

merged over the toolbox's own model config (``_base_``), so ``model.backbone``,
``model.neck``, ``model.head`` stay where the toolbox's tools look for them. What is built is
the model itself (a ``FasterRCNN``, an ``ImageClassifier``, ...): the same class, methods and
attributes, so the toolbox's hooks that use them work unchanged, and its checkpoint keys are
the model's own (masks follow from the weights), so a plain checkpoint loads into it with
MMEngine's usual key report.
"""
import copy
from typing import Optional, Union

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.registry import Registry

from .sparsify import SparsitySettings, sparsify


def build_sparse_model(registry: Registry,
                       kind: str,
                       type_name: str,
                       model: Union[str, dict, None] = None,
                       sparsity: Optional[dict] = None,
                       **model_cfg) -> nn.Module:
    """Build ``model`` from ``registry`` and replace its selected layers by sparse ones.

    Args:
        registry (Registry): The toolbox's model registry (``mmdet.registry.MODELS``,
            ``mmpretrain.registry.MODELS``).
        kind (str): The config key naming the model class (``'detector'``, ``'classifier'``),
            used in the errors.
        type_name (str): The registered name of the sparse entry point (``'SparseDetector'``),
            used in the errors and the log.
        model (str | dict, optional): The model's registered type (e.g. ``'FasterRCNN'``), its
            other arguments given beside it, or a whole model config dict. Defaults to None
            (an error naming the fix).
        sparsity (dict, optional): See :class:`SparsitySettings`. Defaults to None: MaxQ 2:4
            on every eligible backbone conv.
        **model_cfg: The model's arguments (when ``model`` is a type name).

    Returns:
        nn.Module: The model, with ``sparsity_settings`` and ``sparsify_report`` set.
    """
    if 'architecture' in model_cfg:
        raise ValueError(
            f'model.architecture is not a {type_name} argument any more: the {kind} is '
            f"sparsified in place. Write model=dict(type='{type_name}', {kind}='"
            f"{_example(kind)}', sparsity=...) merged over the {kind} config (its backbone, "
            f'... stay as they are), or {kind}=dict(type=..., ...) with a whole {kind} config')
    if isinstance(model, str):
        cfg = dict(type=model, **model_cfg)
    elif isinstance(model, dict):
        if model_cfg:
            raise ValueError(
                f'model.{kind} is a whole {kind} config, so {sorted(model_cfg)} beside '
                f'it are ambiguous; move them into model.{kind} or give {kind} as a type name')
        cfg = dict(model)
    else:
        raise ValueError(
            f'model.{kind} is missing: name the {kind} class, e.g. '
            f"model=dict(type='{type_name}', {kind}='{_example(kind)}', sparsity=dict(...)) "
            f'(got {kind}={model!r})')
    settings = SparsitySettings.from_cfg(sparsity)
    # A deep copy: the dicts under cfg are the caller's config, and some constructors write
    # into theirs (DETR-family detectors set share_pred_layer, num_pred_layer and
    # as_two_stage in bbox_head), which a config written out afterwards would carry.
    built = registry.build(copy.deepcopy(cfg))
    report = sparsify(built, settings)
    built.sparsify_report = report
    print_log(f'{type_name}: {type(built).__name__} with method={settings.method} '
              f'{settings.n}:{settings.m} on patterns {list(settings.layers)}; '
              + report.summary(), logger='current')
    return built


_EXAMPLES = dict(detector='FasterRCNN', classifier='ImageClassifier')


def _example(kind: str) -> str:
    return _EXAMPLES.get(kind, 'ModelClass')

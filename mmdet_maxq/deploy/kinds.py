"""The kinds of sparse model the export handles: MMDetection detectors, mmpretrain classifiers.

A kind names the config type that builds the sparse model (``SparseDetector``,
``SparseClassifier``), the key holding the plain model's type beside it (``detector``,
``classifier``) and the OpenMMLab package whose registry builds the plain model (``mmdet``,
``mmpretrain``). The fold and the checks are the same for every kind; only these differ.
"""
import importlib
from dataclasses import dataclass
from typing import Optional

import torch.nn as nn


@dataclass(frozen=True)
class ModelKind:
    """One kind of sparse model.

    Attributes:
        name (str): ``'detector'`` or ``'classifier'``.
        sparse_type (str): The config type that builds the sparse model.
        inner_key (str): The key of the plain model's type in that config.
        package (str): The OpenMMLab package whose registry builds the plain model (also the
            default scope).
        base_class (str): ``module:Class`` of the plain models of this kind.
        data_sample (str): ``module:Class`` of the data samples of a sample batch.
    """
    name: str
    sparse_type: str
    inner_key: str
    package: str
    base_class: str
    data_sample: str

    def registry(self, name: str = 'MODELS'):
        """The registry ``name`` (``MODELS``, ``DATASETS``) of :attr:`package`."""
        return getattr(importlib.import_module(f'{self.package}.registry'), name)

    def load(self, attr: str):
        """The class named by :attr:`base_class` or :attr:`data_sample`."""
        module, _, name = getattr(self, attr).partition(':')
        return getattr(importlib.import_module(module), name)


DETECTOR = ModelKind('detector', 'SparseDetector', 'detector', 'mmdet',
                     'mmdet.models.detectors:BaseDetector', 'mmdet.structures:DetDataSample')
CLASSIFIER = ModelKind('classifier', 'SparseClassifier', 'classifier', 'mmpretrain',
                       'mmpretrain.models.classifiers:BaseClassifier',
                       'mmpretrain.structures:DataSample')
KINDS = (DETECTOR, CLASSIFIER)


def registered_type_name(value) -> str:
    """A config ``type`` as its registered name: a class gives its ``__name__``, a dotted
    ``'mmdet.FasterRCNN'`` its last part.

    Args:
        value (str | type): The ``type`` value of a config dict.

    Returns:
        str: The bare type name.
    """
    if isinstance(value, type):
        return value.__name__
    return str(value).split('.')[-1]


def kind_of_sparse_cfg(cfg) -> Optional[ModelKind]:
    """The kind whose sparse type ``cfg`` (a model config dict) has, else None."""
    if not isinstance(cfg, dict):
        return None
    name = registered_type_name(cfg.get('type'))
    return next((kind for kind in KINDS if kind.sparse_type == name), None)


def find_sparse_kind(cfg) -> Optional[ModelKind]:
    """The kind of the first sparse model config in ``cfg`` (nested ones too), else None."""
    kind = kind_of_sparse_cfg(cfg)
    if kind is not None:
        return kind
    values = cfg.values() if isinstance(cfg, dict) else cfg if isinstance(cfg, (list, tuple)) \
        else ()
    for value in values:
        kind = find_sparse_kind(value)
        if kind is not None:
            return kind
    return None


def kind_of_model(model: nn.Module) -> ModelKind:
    """The kind of a built model, from its class (whatever built it).

    Args:
        model (nn.Module): A detector (``BaseDetector``) or a classifier (``BaseClassifier``),
            or a wrapper holding one (e.g. a semi-supervised teacher and student).

    Returns:
        ModelKind: Its kind.

    Raises:
        ValueError: It is neither.
    """
    for kind in KINDS:
        try:
            base = kind.load('base_class')
        except ImportError:  # the package of that kind is not installed
            continue
        if any(isinstance(module, base) for module in model.modules()):
            return kind
    raise ValueError(f'{type(model).__name__} is neither an MMDetection detector nor an '
                     'mmpretrain classifier; deploy exports those two kinds')

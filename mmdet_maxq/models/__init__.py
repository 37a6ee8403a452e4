from mmdet_maxq import requires_openmmlab  # noqa: F401  (first: a clear error without the stack)
from .sparse_classifier import build_sparse_classifier
from .sparse_conv import SparseConv2d
from .sparse_detector import build_sparse_detector
from .sparse_layer import SparseLayerMixin
from .sparse_linear import SparseLinear
from .sparse_model import build_sparse_model
from .sparsify import (SparsitySettings, refresh_masks, select_layers, set_preserve_rate,
                       set_submodule, sparse_layers, sparsify, sparsity_settings)

__all__ = ['SparseLayerMixin', 'SparseConv2d', 'SparseLinear', 'build_sparse_classifier',
           'build_sparse_detector', 'build_sparse_model', 'SparsitySettings', 'select_layers',
           'sparse_layers', 'sparsify', 'sparsity_settings', 'set_preserve_rate',
           'set_submodule', 'refresh_masks']

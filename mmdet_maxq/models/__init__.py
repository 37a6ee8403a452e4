from .sparse_conv import SparseConv2d
from .sparse_detector import build_sparse_detector
from .sparsify import (SparsitySettings, refresh_masks, select_convs, set_preserve_rate,
                       sparse_convs, sparsify, sparsity_settings)

__all__ = ['SparseConv2d', 'build_sparse_detector', 'SparsitySettings', 'select_convs',
           'sparse_convs', 'sparsify', 'sparsity_settings', 'set_preserve_rate',
           'refresh_masks']

from .sparse_conv import SparseConv2d
from .sparse_detector import SparseDetector
from .sparsify import SparsitySettings, select_convs, sparse_convs, sparsify

__all__ = ['SparseConv2d', 'SparseDetector', 'SparsitySettings', 'select_convs',
           'sparse_convs', 'sparsify']

"""A drop-in ``nn.Linear`` that runs with an N:M (MaxQ or SR-STE) weight mask."""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .sparse_layer import SparseLayerMixin


class SparseLinear(SparseLayerMixin, nn.Linear):
    """Linear layer whose forward uses ``W * S``; see :class:`SparseLayerMixin` for the mask.

    A weight ``(O, C)`` is the 1x1 conv ``(O, C, 1, 1)``: blocks of M consecutive input
    features (the layout of 2:4 semi-structured kernels), MaxQ's filter-axis query over the
    output rows and no kernel-position query.

    Build it from an existing linear layer with :meth:`convert_from`; fold it back into a
    plain ``nn.Linear`` with :meth:`to_dense`.

    Args: those of :class:`SparseLayerMixin` (``nn.Linear``'s, then ``n``, ``m``,
    ``method``, ``tau``, ``ste``, ``layer_name``).
    """

    _plain_type = nn.Linear
    _layer_kind = 'linear layer'

    @classmethod
    def _constructor_args(cls, linear: nn.Linear) -> Tuple[tuple, dict]:
        return (linear.in_features, linear.out_features, linear.bias is not None), {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

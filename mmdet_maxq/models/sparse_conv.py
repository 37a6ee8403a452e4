"""A drop-in ``nn.Conv2d`` that runs with an N:M (MaxQ or SR-STE) weight mask."""
from typing import Tuple

import torch
import torch.nn as nn

from .sparse_layer import SparseLayerMixin


class SparseConv2d(SparseLayerMixin, nn.Conv2d):
    """Conv2d whose forward uses ``W * S``; see :class:`SparseLayerMixin` for the mask.

    Blocks of M run along the input channels of each (output channel, kernel position);
    MaxQ's soft mask has both the filter-axis and the kernel-position query.

    Build it from an existing conv with :meth:`convert_from`; fold it back into a plain conv
    with :meth:`to_dense`.

    Args: those of :class:`SparseLayerMixin` (``nn.Conv2d``'s, then ``n``, ``m``,
    ``method``, ``tau``, ``ste``, ``layer_name``).
    """

    _plain_type = nn.Conv2d
    _layer_kind = 'conv'

    @classmethod
    def _constructor_args(cls, conv: nn.Conv2d) -> Tuple[tuple, dict]:
        return (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                conv.padding_mode), {}

    def _input_unit(self) -> str:
        return 'channels per group'

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)

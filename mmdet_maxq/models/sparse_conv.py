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

    Args:
        *args: ``nn.Conv2d`` arguments.
        n (int): Weights kept in each block of ``m``. Defaults to 2.
        m (int): Block size along the input channels. Defaults to 4.
        method (str): ``'maxq'`` or ``'srste'``. Defaults to ``'maxq'``.
        tau (float): Temperature of the MaxQ soft axis query. Defaults to 1e-2.
        ste (str): ``'soft'`` passes the gradient of ``W * S`` to ``W`` unmasked, ``'hard'``
            multiplies it by ``S``. Defaults to ``'soft'``.
        layer_name (str): Name used in error messages (the module name in the model, e.g.
            ``backbone.layer3.1.conv2``). Defaults to ``'weight'``.
        **kwargs: More ``nn.Conv2d`` keyword arguments.
    """

    _plain_type = nn.Conv2d
    _layer_kind = 'conv'

    def __init__(self, *args, n: int = 2, m: int = 4, method: str = 'maxq',
                 tau: float = 1e-2, ste: str = 'soft', layer_name: str = 'weight', **kwargs):
        super().__init__(*args, **kwargs)
        self._init_sparsity(n, m, method, tau, ste, layer_name)

    @classmethod
    def _constructor_args(cls, conv: nn.Conv2d) -> Tuple[tuple, dict]:
        return (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                conv.padding_mode), {}

    def _input_unit(self) -> str:
        return 'channels per group'

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)

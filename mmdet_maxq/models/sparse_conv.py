"""A drop-in ``nn.Conv2d`` that runs with an N:M (MaxQ or SR-STE) weight mask."""
from typing import Optional

import torch
import torch.nn as nn

from mmdet_maxq.sparsity import (HardSTE, SoftSTE, check_nm, is_nm_eligible, maxq_mask,
                                 nm_mask)

SPARSE_METHODS = ('maxq', 'srste')
STE_KINDS = ('soft', 'hard')


class SparseConv2d(nn.Conv2d):
    """Conv2d whose forward uses ``W * S``, ``S`` an N:M mask recomputed from ``W``.

    ``method='maxq'`` uses the soft multi-axis MaxQ mask (values 0 or in [1, 3]);
    ``method='srste'`` the hard 0/1 N:M mask. Both honour the incremental-sparsity preserve
    rate set by :meth:`update_mask`. The mask lives in the persistent buffer ``mask``, so
    checkpoints carry it; a checkpoint without it (a plain detector's) loads fine and the mask
    is then computed from the loaded weights before the next forward.

    Build it from an existing conv with :meth:`convert_from` and go back to a plain conv with
    the mask folded in with :meth:`to_dense`.

    Args:
        *args: ``nn.Conv2d`` arguments.
        n (int): Weights kept in each block of ``m``. Defaults to 2.
        m (int): Block size along the input channels. Defaults to 4.
        method (str): ``'maxq'`` or ``'srste'``. Defaults to ``'maxq'``.
        tau (float): Temperature of the MaxQ soft axis query. Defaults to 1e-2.
        ste (str): ``'soft'`` passes the gradient of ``W * S`` to ``W`` unmasked, ``'hard'``
            multiplies it by ``S``. Defaults to ``'soft'``.
        **kwargs: More ``nn.Conv2d`` keyword arguments.
    """

    def __init__(self, *args, n: int = 2, m: int = 4, method: str = 'maxq',
                 tau: float = 1e-2, ste: str = 'soft', **kwargs):
        super().__init__(*args, **kwargs)
        self._set_sparsity(n, m, method, tau, ste)
        self.register_buffer('mask', torch.ones_like(self.weight, requires_grad=False))

    def _set_sparsity(self, n: int, m: int, method: str, tau: float, ste: str) -> None:
        check_nm(n, m)
        if method not in SPARSE_METHODS:
            raise ValueError(f'method must be one of {SPARSE_METHODS}, got {method!r}')
        if ste not in STE_KINDS:
            raise ValueError(f'ste must be one of {STE_KINDS}, got {ste!r}')
        if not tau > 0:
            raise ValueError(f'tau must be > 0, got {tau!r}')
        if not is_nm_eligible(self.weight, m):
            raise ValueError(
                f'a conv with {self.weight.shape[1]} input channels per group cannot be {n}:{m} '
                f'sparse: M={m} must divide the channel count; leave this layer dense or pick '
                f'an M that divides {self.weight.shape[1]}')
        self.n, self.m, self.method, self.tau, self.ste = n, m, method, float(tau), ste
        self.preserve = 0.0
        # True while ``mask`` does not describe the current weights (fresh or loaded without).
        self.mask_stale = True
        self._mask_key = None

    @classmethod
    def convert_from(cls, conv: nn.Conv2d, n: int, m: int, method: str = 'maxq',
                     tau: float = 1e-2, ste: str = 'soft') -> 'SparseConv2d':
        """Wrap ``conv``: the same parameter objects, device, dtype and training mode.

        Args:
            conv (nn.Conv2d): A plain ``nn.Conv2d`` (or MMCV's empty-input ``Conv2d`` wrapper).
            n, m, method, tau, ste: As in the class.

        Returns:
            SparseConv2d: The sparse conv. ``conv`` itself is left untouched.
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f'convert_from expects an nn.Conv2d, got {type(conv).__name__}')
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        for attr in ('in_channels', 'out_channels', 'kernel_size', 'stride', 'padding',
                     'dilation', 'transposed', 'output_padding', 'groups', 'padding_mode',
                     '_reversed_padding_repeated_twice'):
            setattr(new, attr, getattr(conv, attr))
        new.weight = conv.weight
        new.bias = conv.bias
        new.train(conv.training)
        new._set_sparsity(n, m, method, tau, ste)
        new.register_buffer('mask', torch.ones_like(conv.weight, requires_grad=False))
        return new

    @torch.no_grad()
    def update_mask(self, preserve: Optional[float] = None, force: bool = False) -> torch.Tensor:
        """Recompute ``mask`` from the current weights.

        The mask is a function of the weights and the preserve rate only, so it is not
        recomputed while neither changed: the weight's version counter (bumped by every
        in-place update: optimizer steps, ``load_state_dict``) tells. Frozen stages cost
        nothing after their first mask.

        Args:
            preserve (float, optional): Share of blocks exempt from N:M (incremental sparsity).
                Defaults to the last rate set.
            force (bool): Recompute even if weights and rate look unchanged (after writing
                to ``weight.data``, which the version counter does not see). Defaults to False.

        Returns:
            Tensor: The mask buffer (updated in place, so its identity is kept for DDP).
        """
        if preserve is not None:
            if not 0.0 <= preserve <= 1.0:
                raise ValueError(f'preserve must be in [0, 1], got {preserve!r}')
            self.preserve = float(preserve)
        key = (self.weight._version, self.weight.data_ptr(), self.preserve)
        if not (force or self.mask_stale) and key == self._mask_key:
            return self.mask
        weight = self.weight.detach()
        if self.method == 'maxq':
            new = maxq_mask(weight, self.n, self.m, preserve=self.preserve, tau=self.tau)
        else:
            new = nm_mask(weight, self.n, self.m, preserve=self.preserve)
        self.mask.copy_(new)
        self.mask_stale = False
        self._mask_key = key
        return self.mask

    def effective_weight(self) -> torch.Tensor:
        """``W * S``, the weight the conv computes with (differentiable w.r.t. ``W``)."""
        if self.mask_stale:
            self.update_mask()
        if not torch.is_grad_enabled() or not self.weight.requires_grad:
            return self.weight * self.mask
        ste = SoftSTE if self.ste == 'soft' else HardSTE
        return ste.apply(self.weight, self.mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)

    @torch.no_grad()
    def to_dense(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` whose weight is ``W * S`` (the mask folded in)."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                         self.padding, self.dilation, self.groups, self.bias is not None,
                         self.padding_mode, device='meta')
        conv.weight = nn.Parameter(self.effective_weight().detach().clone(),
                                   requires_grad=self.weight.requires_grad)
        if self.bias is not None:
            conv.bias = nn.Parameter(self.bias.detach().clone(),
                                     requires_grad=self.bias.requires_grad)
        conv.train(self.training)
        return conv

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        has_mask = prefix + 'mask' in state_dict
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if has_mask:
            self.mask_stale = False
        else:
            # A plain conv's checkpoint: the mask follows from the weights, so it is not missing.
            if prefix + 'mask' in missing_keys:
                missing_keys.remove(prefix + 'mask')
            self.mask_stale = True

    def extra_repr(self) -> str:
        return (super().extra_repr() + f', nm={self.n}:{self.m}, method={self.method}, '
                f'ste={self.ste}, tau={self.tau}')

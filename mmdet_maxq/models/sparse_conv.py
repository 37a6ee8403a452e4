"""A drop-in ``nn.Conv2d`` that runs with an N:M (MaxQ or SR-STE) weight mask."""
from typing import Optional

import torch
import torch.nn as nn

from mmdet_maxq.sparsity import check_nm, is_nm_eligible, is_nm_sparse, maxq_mask, nm_mask
from mmdet_maxq.sparsity.ste import apply_mask
from mmdet_maxq.sparsity.validation import check_preserve, check_tau

SPARSE_METHODS = ('maxq', 'srste')
STE_KINDS = ('soft', 'hard')


class SparseConv2d(nn.Conv2d):
    """Conv2d whose forward uses ``W * S``, ``S`` an N:M mask recomputed from ``W``.

    ``method='maxq'`` uses the soft multi-axis MaxQ mask (values 0 or in [1, 3]);
    ``method='srste'`` the hard 0/1 N:M mask. Both honour the incremental-sparsity preserve
    rate ``preserve`` (set by :class:`SparsityScheduleHook`).

    When the mask is computed (see "When masks are computed" in ``docs/design.md``):

    - in a sparsified model (:func:`~mmdet_maxq.models.sparsify`), a forward pre-hook on the
      model computes the masks of all its sparse convs at once before every training-mode
      forward (:func:`~mmdet_maxq.models.refresh_masks`, one packed computation), from the
      weights then in place, as the paper's training loop does. Every call of a conv in that
      forward (heads shared over FPN levels) uses that mask. Nothing is cached on the
      weight's identity or version counter, so fused optimizers, ``.data`` writes (EMA swaps,
      mean-teacher updates) and DDP all see masks of the weights they compute with;
    - a conv used on its own (no sparsified model around it) in training mode computes its
      mask at every call of a trainable weight, into a new tensor that the call keeps;
    - a frozen weight (``requires_grad=False``, e.g. MMDetection's ``frozen_stages``) called
      on its own is recomputed only when the preserve rate changed or the mask is stale (in a
      sparsified model it is refreshed with the others);
    - switching to eval mode (``model.eval()``, which MMEngine's val/test loops call after
      the EMA hook has swapped in its weights) and loading a state dict mark the mask stale;
      the next forward recomputes it from the weights then in place, and later eval forwards
      reuse it.

    The mask lives in the persistent buffer ``mask``, so checkpoints carry it; it is never
    trusted on load (an EMA checkpoint holds averaged masks, another N:M's checkpoint other
    masks): the mask always follows from the loaded weights. A checkpoint without masks (a
    plain detector's) loads without a missing-key warning.

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
        layer_name (str): Name used in error messages (the module name in the detector,
            e.g. ``backbone.layer3.1.conv2``). Defaults to ``'weight'``.
        **kwargs: More ``nn.Conv2d`` keyword arguments.
    """

    def __init__(self, *args, n: int = 2, m: int = 4, method: str = 'maxq',
                 tau: float = 1e-2, ste: str = 'soft', layer_name: str = 'weight', **kwargs):
        super().__init__(*args, **kwargs)
        self._set_sparsity(n, m, method, tau, ste, layer_name)
        self.register_buffer('mask', torch.ones_like(self.weight, requires_grad=False))

    def _set_sparsity(self, n: int, m: int, method: str, tau: float, ste: str,
                      layer_name: str) -> None:
        check_nm(n, m)
        if method not in SPARSE_METHODS:
            raise ValueError(f'method must be one of {SPARSE_METHODS}, got {method!r}')
        if ste not in STE_KINDS:
            raise ValueError(f'ste must be one of {STE_KINDS}, got {ste!r}')
        check_tau(tau)
        if not is_nm_eligible(self.weight, m):
            raise ValueError(
                f'{layer_name}: a conv with {self.weight.shape[1]} input channels per group '
                f'cannot be {n}:{m} sparse: M={m} must divide the channel count; leave this '
                f'layer dense or pick an M that divides {self.weight.shape[1]}')
        self.n, self.m, self.method, self.tau, self.ste = n, m, method, float(tau), ste
        self.layer_name = layer_name
        self.preserve = 0.0
        # True while ``mask`` may not describe the current weights (fresh, loaded, eval switch).
        self.mask_stale = True
        # The preserve rate ``mask`` was computed at.
        self._mask_preserve: Optional[float] = None
        # True while a sparsified model's forward, whose pre-hook refreshed ``mask``, runs.
        self.mask_held = False

    @classmethod
    def convert_from(cls, conv: nn.Conv2d, n: int, m: int, method: str = 'maxq',
                     tau: float = 1e-2, ste: str = 'soft',
                     layer_name: str = 'weight') -> 'SparseConv2d':
        """Wrap ``conv``: the same parameter objects, device, dtype, training mode and hooks.

        The module is built by the normal constructor (on the ``meta`` device, so nothing is
        allocated twice) and then given ``conv``'s own parameters; its forward hooks and
        pre-hooks are carried over.

        Args:
            conv (nn.Conv2d): A plain ``nn.Conv2d`` (or MMCV's ``Conv2d`` wrapper, whose only
                addition, an empty-input guard for old torch versions, plain convs of the
                supported torch versions do themselves).
            n, m, method, tau, ste, layer_name: As in the class.

        Returns:
            SparseConv2d: The sparse conv. ``conv`` itself is left untouched.
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f'convert_from expects an nn.Conv2d, got {type(conv).__name__}')
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                  conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                  conv.padding_mode, n=n, m=m, method=method, tau=tau, ste=ste,
                  layer_name=layer_name, device='meta', dtype=conv.weight.dtype)
        new.weight = conv.weight
        new.bias = conv.bias
        new.mask = torch.ones_like(conv.weight, requires_grad=False)
        new.train(conv.training)
        new.mask_stale = True
        for name in ('_forward_hooks', '_forward_hooks_with_kwargs',
                     '_forward_hooks_always_called', '_forward_pre_hooks',
                     '_forward_pre_hooks_with_kwargs'):
            if hasattr(conv, name):
                getattr(new, name).update(getattr(conv, name))
        return new

    def compute_mask(self, preserve: float = 0.0) -> torch.Tensor:
        """The mask of the current weight at ``preserve`` (a new tensor; ``mask`` unchanged)."""
        weight = self.weight.detach()
        if self.method == 'maxq':
            return maxq_mask(weight, self.n, self.m, preserve=preserve, tau=self.tau,
                             name=self.layer_name)
        return nm_mask(weight, self.n, self.m, preserve=preserve, name=self.layer_name)

    @torch.no_grad()
    def update_mask(self, preserve: Optional[float] = None) -> torch.Tensor:
        """Recompute ``mask`` from the current weight (no host-device synchronisation).

        Args:
            preserve (float, optional): Share of blocks exempt from N:M (incremental
                sparsity). Defaults to the rate last set.

        Returns:
            Tensor: The mask buffer (updated in place, so its identity is kept).
        """
        if preserve is not None:
            self.set_preserve(preserve)
        self.mask.copy_(self.compute_mask(self.preserve))
        self.mark_mask_current()
        return self.mask

    def mark_mask_current(self) -> None:
        """Record that ``mask`` was just computed from the current weight at ``preserve``."""
        self.mask_stale = False
        self._mask_preserve = self.preserve

    def set_preserve(self, preserve: float) -> None:
        """Set the preserve rate; the mask follows at the next forward."""
        check_preserve(preserve)
        self.preserve = float(preserve)

    def _mask_is_current(self) -> bool:
        if self.mask_stale or self._mask_preserve != self.preserve:
            return False
        if self.mask_held:  # refreshed by the sparsified model for this forward
            return True
        # A trainable weight changes at every step: recompute in every training forward.
        return not (self.training and self.weight.requires_grad)

    def effective_weight(self) -> torch.Tensor:
        """``W * S``, the weight the conv computes with (differentiable w.r.t. ``W``).

        Recomputes the mask first when it may not describe the current weight (see the
        class docstring).
        """
        mask = self.mask
        if not self._mask_is_current():
            if self.training and self.weight.requires_grad:
                # Called on its own in training: a new mask for this call, which the hard STE
                # saves for the backward; the buffer gets a copy, so a later call rewriting the
                # buffer does not touch what an earlier call saved.
                mask = self.compute_mask(self.preserve)
                with torch.no_grad():
                    self.mask.copy_(mask)
                self.mark_mask_current()
            else:
                self.update_mask()
        if not torch.is_grad_enabled() or not self.weight.requires_grad:
            return self.weight * mask
        return apply_mask(self.weight, mask, hard=self.ste == 'hard')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)

    def train(self, mode: bool = True) -> 'SparseConv2d':
        if not mode:
            # The weights evaluated may have been swapped in through ``.data`` (EMA).
            self.mask_stale = True
        return super().train(mode)

    @torch.no_grad()
    def to_dense(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` of weight ``W * S``, ``S`` the mask at preserve rate 0.

        Always at rate 0 (every block N:M), whatever rate the conv is at: the result is the
        exact N:M deploy weight. ``self`` is left unchanged.
        """
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                         self.padding, self.dilation, self.groups, self.bias is not None,
                         self.padding_mode, device='meta')
        folded = self.weight.detach() * self.compute_mask(0.0)
        conv.weight = nn.Parameter(folded, requires_grad=self.weight.requires_grad)
        if self.bias is not None:
            conv.bias = nn.Parameter(self.bias.detach().clone(),
                                     requires_grad=self.bias.requires_grad)
        conv.train(self.training)
        return conv

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        weight = state_dict.get(prefix + 'weight')
        if self.method == 'maxq' and isinstance(weight, torch.Tensor):
            self._refuse_folded(weight)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        # A plain conv's checkpoint: the mask follows from the weights, so it is not missing.
        if prefix + 'mask' in missing_keys:
            missing_keys.remove(prefix + 'mask')
        self.mask_stale = True

    def _refuse_folded(self, weight: torch.Tensor) -> None:
        """Refuse an exactly N:M weight: MaxQ would apply its multipliers a second time."""
        if self.n == self.m or weight.shape != self.weight.shape or \
                not weight.is_floating_point():
            return  # N = M keeps everything; a size mismatch is nn.Module's to report
        if is_nm_sparse(weight, self.n, self.m) and bool(weight.any()):
            raise ValueError(
                f'{self.layer_name}: the loaded weight is already exactly {self.n}:{self.m} '
                'sparse, i.e. folded (W * S). MaxQ recomputes S from the weight and would apply '
                'the soft multipliers a second time (about 3x instead of 2.2x on kept '
                'weights). Import the sparse ImageNet checkpoint raw (tools/convert_checkpoint.py '
                '--method maxq, the default), or fine-tune a folded checkpoint with an srste '
                "config (sparsity.method='srste')")

    def extra_repr(self) -> str:
        return (super().extra_repr() + f', nm={self.n}:{self.m}, method={self.method}, '
                f'ste={self.ste}, tau={self.tau}')

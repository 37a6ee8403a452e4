"""Straight-through maskers (DESIGN.md section 3) and the SR-STE decay term.

The forward of both maskers is ``W * S``. The mask is a function of the weights computed
outside autograd, so it never receives a gradient.
"""
import math
import numbers
from typing import Optional

import torch

from .validation import check_mask_like

__all__ = ['SoftSTE', 'HardSTE', 'apply_mask', 'srste_decay_term', 'srste_decay_']


class SoftSTE(torch.autograd.Function):
    """``W * S``; the gradient w.r.t. ``W`` is the gradient w.r.t. ``W * S``, unmasked.

    Pruned weights keep receiving gradients, so they can grow back when the mask changes.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return weight * mask.to(weight.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output, None


class HardSTE(torch.autograd.Function):
    """``W * S``; the gradient w.r.t. ``W`` is the gradient w.r.t. ``W * S`` times ``S``.

    This is the true gradient of ``W * S`` with ``S`` held constant.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.to(weight.dtype)
        ctx.save_for_backward(mask)
        return weight * mask

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        mask, = ctx.saved_tensors
        return grad_output * mask, None


def apply_mask(weight: torch.Tensor, mask: torch.Tensor, hard: bool = False) -> torch.Tensor:
    """``W * S`` with the soft (default) or hard straight-through gradient.

    Args:
        weight (Tensor): The weight (usually a parameter that requires grad).
        mask (Tensor): Its mask, same shape.
        hard (bool): Use :class:`HardSTE` instead of :class:`SoftSTE`.

    Returns:
        Tensor: The masked weight, of ``weight``'s dtype.
    """
    check_mask_like(mask, weight)
    return (HardSTE if hard else SoftSTE).apply(weight, mask)


def _check_lam(lam: float) -> None:
    if (isinstance(lam, bool) or not isinstance(lam, numbers.Real)
            or not (math.isfinite(float(lam)) and float(lam) >= 0)):
        raise ValueError(f'lam must be a finite number >= 0 (the SR-STE decay, default 2e-4), '
                         f'got {lam!r}')


def srste_decay_term(weight: torch.Tensor, mask: torch.Tensor, lam: float = 2e-4
                     ) -> torch.Tensor:
    """``lam * (1 - clamp(S, 0, 1)) * W``: pulls the pruned weights towards zero.

    Args:
        weight (Tensor): The weight ``W``.
        mask (Tensor): Its mask ``S``, same shape.
        lam (float): Decay strength, >= 0.

    Returns:
        Tensor: A new tensor (no autograd history), zero wherever ``S >= 1``.
    """
    check_mask_like(mask, weight)
    _check_lam(lam)
    with torch.no_grad():
        return (1 - mask.clamp(0, 1)).mul_(lam).mul_(weight.detach())


@torch.no_grad()
def srste_decay_(weight: torch.Tensor, mask: torch.Tensor, lam: float = 2e-4
                 ) -> Optional[torch.Tensor]:
    """Add :func:`srste_decay_term` to ``weight.grad`` in place.

    Call it after the gradients are unscaled and before the optimizer step. A no-op when
    ``weight.grad`` is None (the weight took no part in the loss).

    Args:
        weight (Tensor): The weight parameter.
        mask (Tensor): Its mask, same shape.
        lam (float): Decay strength, >= 0.

    Returns:
        Tensor or None: ``weight.grad``.
    """
    check_mask_like(mask, weight)
    _check_lam(lam)
    if weight.grad is not None:
        weight.grad.add_(srste_decay_term(weight, mask, lam))
    return weight.grad

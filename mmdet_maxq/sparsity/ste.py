"""Straight-through maskers ("The mask" in docs/design.md) and the SR-STE decay term.

The forward of both maskers is ``W * S``. The mask is a function of the weights computed
outside autograd, so it never receives a gradient.
"""
from typing import Optional, Sequence, Union

import torch

from .validation import check_decay, check_mask_like

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


def srste_decay_term(weight: torch.Tensor, mask: torch.Tensor, lam: float = 2e-4
                     ) -> torch.Tensor:
    """``lam * (1 - clamp(S, 0, 1)) * W``: pulls the pruned weights towards zero.

    Args:
        weight (Tensor): The weight ``W``.
        mask (Tensor): Its mask ``S``, same shape.
        lam (float): Decay strength, > 0.

    Returns:
        Tensor: A new tensor (no autograd history), zero wherever ``S >= 1``.
    """
    check_mask_like(mask, weight)
    check_decay(lam, 'lam')
    with torch.no_grad():
        return (1 - mask.clamp(0, 1)).mul_(lam).mul_(weight.detach())


@torch.no_grad()
def srste_decay_(weight: Union[torch.Tensor, Sequence[torch.Tensor]],
                 mask: Union[torch.Tensor, Sequence[torch.Tensor]], lam: float = 2e-4,
                 scale: Optional[torch.Tensor] = None):
    """Add :func:`srste_decay_term` to ``weight.grad`` in place, for one weight or a list.

    Call it after the gradients are unscaled and before the optimizer step. Weights whose
    ``grad`` is None (they took no part in the loss) are skipped. A list of weights is done
    with a handful of ``torch._foreach_*`` ops whatever its length (same values as one
    :func:`srste_decay_term` per weight).

    Args:
        weight (Tensor | Sequence[Tensor]): The weight parameter(s).
        mask (Tensor | Sequence[Tensor]): Their masks, same shapes.
        lam (float): Decay strength, > 0. Defaults to 2e-4.
        scale (Tensor, optional): A 0-d factor the terms are multiplied by (the loss scale,
            for gradients still scaled at this point, as fused optimizers receive them).
            Defaults to None (no factor).

    Returns:
        Tensor | None | list: ``weight.grad`` (a list of them for a list of weights).
    """
    single = isinstance(weight, torch.Tensor)
    weights = [weight] if single else list(weight)
    masks = [mask] if single else list(mask)
    if len(weights) != len(masks):
        raise ValueError(f'{len(weights)} weights but {len(masks)} masks; give one mask per '
                         'weight')
    for w, s in zip(weights, masks):
        check_mask_like(s, w)
    check_decay(lam, 'lam')
    pairs = [(w, s) for w, s in zip(weights, masks) if w.grad is not None]
    if pairs:
        grads = [w.grad for w, _ in pairs]
        terms = torch._foreach_clamp_min([s for _, s in pairs], 0)
        torch._foreach_clamp_max_(terms, 1)
        torch._foreach_neg_(terms)
        torch._foreach_add_(terms, 1)  # 1 - clamp(S, 0, 1), exactly
        torch._foreach_mul_(terms, lam)
        torch._foreach_mul_(terms, [w for w, _ in pairs])  # no_grad: no detach needed
        if scale is not None:
            torch._foreach_mul_(terms, scale)
        if any(t.dtype != g.dtype for t, g in zip(terms, grads)):
            terms = [t.to(g.dtype) for t, g in zip(terms, grads)]
        torch._foreach_add_(grads, terms)
    return weights[0].grad if single else [w.grad for w in weights]

"""Straight-through maskers and the SR-STE decay term."""
import torch

__all__ = ['SoftSTE', 'HardSTE', 'apply_mask', 'srste_decay_term', 'srste_decay_']


class SoftSTE(torch.autograd.Function):
    """``W * S`` forward; the gradient w.r.t. ``W`` is the gradient w.r.t. ``W * S``."""

    @staticmethod
    def forward(ctx, weight, mask):
        return weight * mask

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output, None


class HardSTE(torch.autograd.Function):
    """``W * S`` forward; the gradient w.r.t. ``W`` is the gradient w.r.t. ``W * S`` times S."""

    @staticmethod
    def forward(ctx, weight, mask):
        ctx.save_for_backward(mask)
        return weight * mask

    @staticmethod
    def backward(ctx, grad_output):
        mask, = ctx.saved_tensors
        return grad_output * mask, None


def apply_mask(weight: torch.Tensor, mask: torch.Tensor, hard: bool = False) -> torch.Tensor:
    """``W * S`` with the soft (default) or hard straight-through gradient."""
    return (HardSTE if hard else SoftSTE).apply(weight, mask)


def srste_decay_term(weight: torch.Tensor, mask: torch.Tensor, lam: float = 2e-4
                     ) -> torch.Tensor:
    """``lam * (1 - clamp(S, 0, 1)) * W``: pulls the pruned weights towards zero."""
    return (1 - mask.clamp(0, 1)).mul_(lam).mul_(weight.detach())


@torch.no_grad()
def srste_decay_(weight: torch.Tensor, mask: torch.Tensor, lam: float = 2e-4) -> None:
    """Add :func:`srste_decay_term` to ``weight.grad`` in place (no-op without a gradient)."""
    if weight.grad is not None:
        weight.grad.add_(srste_decay_term(weight, mask, lam))

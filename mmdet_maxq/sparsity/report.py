"""N:M compliance and sparsity summaries of a weight (blocks: see "The mask", docs/design.md)."""
from typing import Dict, Optional

import torch

from .validation import check_finite, check_mask_like, check_nm, check_weight, is_nm_eligible

__all__ = ['block_nonzeros', 'is_nm_sparse', 'nm_compliance', 'layer_summary']


def block_nonzeros(weight: torch.Tensor, m: int) -> torch.Tensor:
    """Non-zeros per block of M input channels, in the ``(O, kh, kw, C)`` block layout.

    Args:
        weight (Tensor): 4-D conv or 2-D linear weight (or a boolean "non-zero" map of one)
            whose input channels ``m`` divides.
        m (int): Block size.

    Returns:
        Tensor: 1-D integer counts, one per block.
    """
    w4 = weight[:, :, None, None] if weight.dim() == 2 else weight
    return (w4 != 0).permute(0, 2, 3, 1).reshape(-1, m).sum(dim=1)


def nm_compliance(weight: torch.Tensor, n: int, m: int) -> float:
    """Share of the blocks of ``weight`` with at most ``n`` non-zeros.

    Args:
        weight (Tensor): 4-D conv or 2-D linear weight whose input channels ``m`` divides.
        n (int): Allowed non-zeros per block.
        m (int): Block size.

    Returns:
        float: In [0, 1]; 1.0 means the weight is exactly N:M sparse.
    """
    check_weight(weight, n, m)
    return float((block_nonzeros(weight.detach(), m) <= n).double().mean())


def is_nm_sparse(weight: torch.Tensor, n: int, m: int) -> bool:
    """Whether every block of ``weight`` has at most ``n`` non-zeros.

    Args:
        weight (Tensor): 4-D conv or 2-D linear weight whose input channels ``m`` divides.
        n (int): Allowed non-zeros per block.
        m (int): Block size.

    Returns:
        bool: True when the weight follows the N:M pattern everywhere.
    """
    check_weight(weight, n, m)
    return bool((block_nonzeros(weight.detach(), m) <= n).all())


@torch.no_grad()
def layer_summary(weight: torch.Tensor, n: int, m: int,
                  mask: Optional[torch.Tensor] = None) -> Dict:
    """Sparsity figures of one layer, measured on the effective weight ``W * mask`` (or ``W``).

    Ineligible layers (input channels not divisible by ``m``, such as a 3-channel stem) are
    reported with ``eligible=False``, ``nm_compliance=None`` and ``compliant=False``: they are
    dense, never silently counted as sparse.

    Args:
        weight (Tensor): 4-D conv or 2-D linear weight, finite.
        n (int): N of N:M.
        m (int): M of N:M.
        mask (Tensor, optional): The layer's mask (same shape as ``weight``).

    Returns:
        dict: ``shape`` (tuple), ``eligible`` (bool), ``numel`` (int), ``sparsity`` (share of
        zeros of the effective weight), ``nm_compliance`` (float or None), ``compliant``
        (bool), ``mean_multiplier`` (mean of the non-zero mask entries; None without a mask
        or when it is all zero).
    """
    check_nm(n, m)
    if not isinstance(weight, torch.Tensor) or weight.dim() not in (2, 4):
        raise ValueError('weight must be a 4-D conv weight (O, C, kh, kw) or a 2-D linear '
                         f'weight (O, C), got {getattr(weight, "shape", type(weight).__name__)}')
    weight = weight.detach()
    check_finite(weight)
    zero = weight == 0
    mean_multiplier = None
    if mask is not None:
        check_mask_like(mask, weight)
        mask = mask.detach()
        check_finite(mask, name='mask')
        zero |= mask == 0
        kept = mask[mask != 0]
        mean_multiplier = float(kept.double().mean()) if kept.numel() else None
    eligible = is_nm_eligible(weight, m)
    compliance = None
    if eligible:
        compliance = float((block_nonzeros(~zero, m) <= n).double().mean())
    return dict(shape=tuple(weight.shape), eligible=eligible, numel=weight.numel(),
                sparsity=float(zero.double().mean()) if weight.numel() else 0.0,
                nm_compliance=compliance, compliant=bool(eligible and compliance == 1.0),
                mean_multiplier=mean_multiplier)

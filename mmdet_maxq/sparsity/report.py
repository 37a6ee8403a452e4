"""N:M compliance and sparsity summaries of a weight."""
from typing import Dict, Optional

import torch

from .validation import check_nm, is_nm_eligible

__all__ = ['is_nm_sparse', 'nm_compliance', 'layer_summary']


def _block_nonzeros(weight: torch.Tensor, m: int) -> torch.Tensor:
    w4 = weight[:, :, None, None] if weight.dim() == 2 else weight
    return (w4 != 0).permute(0, 2, 3, 1).reshape(-1, m).sum(dim=1)


def _check(weight: torch.Tensor, n: int, m: int) -> None:
    check_nm(n, m)
    if not is_nm_eligible(weight, m):
        raise ValueError(f'weight of shape {tuple(weight.shape)} is not N:M-eligible for m={m} '
                         '(needs a 2-D or 4-D weight whose input channels m divides)')


def nm_compliance(weight: torch.Tensor, n: int, m: int) -> float:
    """Share of blocks of ``weight`` with at most ``n`` non-zeros."""
    _check(weight, n, m)
    return float((_block_nonzeros(weight, m) <= n).float().mean())


def is_nm_sparse(weight: torch.Tensor, n: int, m: int) -> bool:
    """Whether every block of ``weight`` has at most ``n`` non-zeros."""
    _check(weight, n, m)
    return bool((_block_nonzeros(weight, m) <= n).all())


@torch.no_grad()
def layer_summary(weight: torch.Tensor, n: int, m: int,
                  mask: Optional[torch.Tensor] = None) -> Dict:
    """Sparsity figures of one layer, measured on ``W * mask`` (or ``W``).

    Returns:
        dict: ``shape``, ``eligible``, ``numel``, ``sparsity`` (share of zeros),
        ``nm_compliance`` and ``compliant`` (None for ineligible layers), ``mean_multiplier``
        (mean of the non-zero mask entries; None without a mask).
    """
    check_nm(n, m)
    effective = weight if mask is None else weight * mask
    eligible = is_nm_eligible(weight, m)
    compliance = nm_compliance(effective, n, m) if eligible else None
    mean_multiplier = None
    if mask is not None and bool((mask != 0).any()):
        mean_multiplier = float(mask[mask != 0].float().mean())
    return dict(shape=tuple(weight.shape), eligible=eligible, numel=weight.numel(),
                sparsity=float((effective == 0).float().mean()), nm_compliance=compliance,
                compliant=None if compliance is None else compliance == 1.0,
                mean_multiplier=mean_multiplier)

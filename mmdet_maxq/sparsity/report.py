"""N:M figures of a weight, the one place they are computed (blocks: see "The mask",
docs/design.md).

:func:`nm_figures` measures one weight (``W`` or ``W * mask``); every report builds on it: the
sparsity logger hook, ``tools/sparsity_report.py`` (:mod:`mmdet_maxq.analysis`), the checkpoint
converter, the deploy check of the exported weights and the ONNX graph check.
:func:`nm_compliance` and :func:`is_nm_sparse` are its two most asked figures, for a weight
that must be eligible.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from .validation import check_finite, check_mask_like, check_nm, check_weight, is_nm_eligible

__all__ = ['NMFigures', 'nm_figures', 'block_nonzeros', 'is_nm_sparse', 'nm_compliance']


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


@dataclass(frozen=True)
class NMFigures:
    """N:M figures of one weight, measured on ``W * mask`` (or ``W``).

    Counts add up over layers (sum ``zeros`` and ``numel`` for a stage's sparsity, ``nm_blocks``
    and ``blocks`` for its share of N:M blocks).

    Attributes:
        shape (tuple): The weight's shape, ``(O, C, kh, kw)`` or ``(O, C)``.
        n (int): N of N:M.
        m (int): M of N:M.
        eligible (bool): ``m`` divides the input channels / features (and the weight is not
            empty); an ineligible layer stays dense and is never counted as N:M.
        numel (int): Weights.
        zeros (int): Zero weights of ``W * mask``.
        blocks (int): Blocks of ``m`` consecutive input channels (0 when not eligible).
        nm_blocks (int): Blocks with at most ``n`` non-zeros (0 when not eligible).
        max_block_nonzeros (int, optional): Non-zeros of the densest block (None when not
            eligible).
        mean_multiplier (float, optional): Mean of the non-zero mask entries (the soft MaxQ
            multiplier); None without a mask or when the mask is all zero.
    """
    shape: Tuple[int, ...]
    n: int
    m: int
    eligible: bool
    numel: int
    zeros: int
    blocks: int
    nm_blocks: int
    max_block_nonzeros: Optional[int]
    mean_multiplier: Optional[float]

    @property
    def nonzero(self) -> int:
        """Non-zero weights of ``W * mask``."""
        return self.numel - self.zeros

    @property
    def sparsity(self) -> float:
        """Share of zero weights (0.0 for an empty weight)."""
        return self.zeros / self.numel if self.numel else 0.0

    @property
    def compliance(self) -> Optional[float]:
        """Share of the blocks with at most ``n`` non-zeros; None when not eligible."""
        return self.nm_blocks / self.blocks if self.eligible else None

    @property
    def compliant(self) -> bool:
        """Eligible and every block has at most ``n`` non-zeros (exactly N:M sparse)."""
        return self.eligible and self.nm_blocks == self.blocks


@torch.no_grad()
def nm_figures(weight: torch.Tensor, n: int, m: int,
               mask: Optional[torch.Tensor] = None) -> NMFigures:
    """N:M figures of one weight, on the effective weight ``W * mask`` (or ``W``).

    An ineligible weight (input channels not divisible by ``m``, such as a 3-channel stem) is
    measured with ``eligible=False`` and no blocks: it is dense, never counted as N:M. The
    counts are read to the host once (one synchronisation on a GPU): call it at a logging
    interval, not every iteration.

    Args:
        weight (Tensor): 4-D conv weight ``(O, C, kh, kw)`` or 2-D linear weight ``(O, C)``;
            finite.
        n (int): N of N:M.
        m (int): M of N:M.
        mask (Tensor, optional): The layer's mask (same shape as ``weight``), finite.

    Returns:
        NMFigures: The counts and shares.

    Raises:
        ValueError: Invalid ``n`` / ``m``, a weight that is not a 2-D or 4-D tensor, a mask
            of another shape, or NaN / Inf values.
    """
    check_nm(n, m)
    if not isinstance(weight, torch.Tensor) or weight.dim() not in (2, 4):
        raise ValueError('weight must be a 4-D conv weight (O, C, kh, kw) or a 2-D linear '
                         f'weight (O, C), got {getattr(weight, "shape", type(weight).__name__)}')
    weight = weight.detach()
    if weight.is_floating_point() and weight.numel():
        check_finite(weight)
    zero = weight == 0
    counts = [zero.sum()]
    if mask is not None:
        check_mask_like(mask, weight)
        mask = mask.detach()
        if mask.numel():
            check_finite(mask, name='mask')
        kept = mask != 0
        zero |= ~kept
        counts = [zero.sum(), kept.sum(), torch.where(kept, mask, 0).double().sum()]
    eligible = is_nm_eligible(weight, m)
    if eligible:
        per_block = block_nonzeros(~zero, m)
        counts += [(per_block <= n).sum(), per_block.max()]
    # One read to the host for every figure (float64 holds the counts exactly).
    values = torch.stack([c.double() for c in counts]).tolist()
    zeros = int(values[0])
    mean_multiplier = None
    if mask is not None and values[1]:
        mean_multiplier = values[2] / values[1]
    blocks = weight.numel() // m if eligible else 0
    return NMFigures(shape=tuple(weight.shape), n=n, m=m, eligible=eligible,
                     numel=weight.numel(), zeros=zeros, blocks=blocks,
                     nm_blocks=int(values[-2]) if eligible else 0,
                     max_block_nonzeros=int(values[-1]) if eligible else None,
                     mean_multiplier=mean_multiplier)


def nm_compliance(weight: torch.Tensor, n: int, m: int) -> float:
    """Share of the blocks of ``weight`` with at most ``n`` non-zeros.

    Args:
        weight (Tensor): 4-D conv or 2-D linear weight whose input channels ``m`` divides.
        n (int): Allowed non-zeros per block.
        m (int): Block size.

    Returns:
        float: In [0, 1]; 1.0 means the weight is exactly N:M sparse.

    Raises:
        ValueError: The weight is not eligible (see :func:`check_weight`) or not finite.
    """
    check_weight(weight, n, m, check_finite=False)  # nm_figures checks the values
    return nm_figures(weight, n, m).compliance


def is_nm_sparse(weight: torch.Tensor, n: int, m: int) -> bool:
    """Whether every block of ``weight`` has at most ``n`` non-zeros: exactly N:M sparse.

    Arguments and errors as :func:`nm_compliance`.
    """
    check_weight(weight, n, m, check_finite=False)
    return nm_figures(weight, n, m).compliant

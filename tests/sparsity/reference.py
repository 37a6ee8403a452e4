"""The slow, spec-literal MaxQ mask ("The mask" in docs/design.md): full stable sorts only.

For verification only: ``benchmarks/mask_speed.py`` times it against
:func:`mmdet_maxq.sparsity.maxq_mask` and checks both give the same tensors, and the tests
check it against their own loop-based transcription of the spec. Do not use it in training.

Conventions shared with the fast masks:

- Ties: a stable sort puts the lower index first among equal values, so "keep the N largest"
  keeps the lower indices, and "exempt the E smallest norms" / "drop the K smallest" take the
  lower indices first.
- Block norms are float32 (float64 for float64 weights) sums taken left to right over the M
  entries of the block.
- ``K = floor((M - N) / M * row_len)`` in exact integer arithmetic. ``K = 0`` (only for
  N = M) zeroes nothing and uses the row minimum as the threshold ``t``.
"""
import math

import torch

__all__ = ['reference_hard_mask', 'reference_axis_query', 'reference_maxq_mask']


def _stable_order(x: torch.Tensor, descending: bool) -> torch.Tensor:
    return torch.sort(x, dim=-1, descending=descending, stable=True).indices


def reference_hard_mask(a: torch.Tensor, n: int, m: int, preserve: float = 0.0) -> torch.Tensor:
    """Boolean N:M keep-mask ``L`` of the magnitudes ``a`` (2-D or 4-D), with exemption.

    Args:
        a (Tensor): Non-negative magnitudes ``(O, C, kh, kw)`` or ``(O, C)``.
        n (int): Weights kept per block.
        m (int): Block size, dividing ``C``.
        preserve (float): Share of blocks (smallest L1 norm first) kept whole.

    Returns:
        Tensor: Boolean mask of ``a``'s shape.
    """
    a4 = a[:, :, None, None] if a.dim() == 2 else a
    o, c, kh, kw = a4.shape
    blocks = a4.permute(0, 2, 3, 1).reshape(-1, m)
    keep = torch.zeros_like(blocks, dtype=torch.bool)
    keep.scatter_(1, _stable_order(blocks, descending=True)[:, :n], True)
    exempt_count = math.floor(preserve * blocks.shape[0])
    if exempt_count > 0:
        norms = blocks[:, 0].clone()
        for j in range(1, m):
            norms += blocks[:, j]
        keep[_stable_order(norms, descending=False)[:exempt_count]] = True
    return keep.reshape(o, kh, kw, c).permute(0, 3, 1, 2).reshape(a.shape)


def reference_axis_query(rows: torch.Tensor, n: int, m: int, tau: float) -> torch.Tensor:
    """The soft axis query of a 2-D magnitude matrix (one row per axis element).

    Args:
        rows (Tensor): Non-negative magnitudes.
        n (int): N of N:M.
        m (int): M of N:M.
        tau (float): Sigmoid temperature.

    Returns:
        Tensor: ``sigmoid((a - t) / tau)``, 0 on the K smallest entries of each row.
    """
    length = rows.shape[1]
    k = (m - n) * length // m
    values, order = torch.sort(rows, dim=1, stable=True)
    if k == 0:
        return torch.sigmoid((rows - values[:, :1]) / tau)
    t = ((values[:, k - 1] + values[:, k]) / 2)[:, None]  # k < length because n >= 1
    out = torch.sigmoid((rows - t) / tau)
    dropped = torch.zeros_like(rows, dtype=torch.bool)
    dropped.scatter_(1, order[:, :k], True)
    return out.masked_fill(dropped, 0.0)


def reference_maxq_mask(weight: torch.Tensor, n: int, m: int, preserve: float = 0.0,
                        tau: float = 1e-2) -> torch.Tensor:
    """Spec-literal ``S = L * (1 + F + P)``; same contract as ``maxq_mask`` (no checks).

    Args:
        weight (Tensor): 4-D conv or 2-D linear weight, finite.
        n (int): Weights kept per block.
        m (int): Block size, dividing the input channels.
        preserve (float): Share of blocks exempt from N:M.
        tau (float): Sigmoid temperature.

    Returns:
        Tensor: The mask, of ``weight``'s shape and dtype (computed in float32 for half
        types).
    """
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    a = weight.detach().to(dtype).abs()
    a4 = a[:, :, None, None] if a.dim() == 2 else a
    o, c, kh, kw = a4.shape
    f = reference_axis_query(a4.reshape(o, c * kh * kw), n, m, tau).reshape(a4.shape)
    p = torch.zeros_like(a4)
    if kh * kw > 1:
        rows = a4.reshape(o * c, kh * kw).t().contiguous()
        p = reference_axis_query(rows, n, m, tau).t().reshape(a4.shape)
    mask = reference_hard_mask(a4, n, m, preserve) * (1 + f + p)
    return mask.reshape(weight.shape).to(weight.dtype)

"""The slow, spec-literal MaxQ mask: full stable sorts, no shortcuts.

Kept for verification only (``benchmarks/mask_speed.py`` times it against
:func:`mmdet_maxq.sparsity.maxq_mask` and checks that both agree). Ties follow the same rule:
a stable sort puts the lower index first among equal values.
"""
import math

import torch


def _sorted_order(x: torch.Tensor, descending: bool) -> torch.Tensor:
    return torch.sort(x, dim=-1, descending=descending, stable=True).indices


def reference_hard_mask(a: torch.Tensor, n: int, m: int, preserve: float = 0.0) -> torch.Tensor:
    a4 = a[:, :, None, None] if a.dim() == 2 else a
    o, c, kh, kw = a4.shape
    blocks = a4.permute(0, 2, 3, 1).reshape(-1, m)
    order = _sorted_order(blocks, descending=True)
    keep = torch.zeros_like(blocks, dtype=torch.bool)
    keep.scatter_(1, order[:, :n], True)
    exempt_count = math.floor(preserve * blocks.shape[0])
    if exempt_count > 0:
        exempt = _sorted_order(blocks.sum(dim=1), descending=False)[:exempt_count]
        keep[exempt] = True
    return keep.reshape(o, kh, kw, c).permute(0, 3, 1, 2).reshape(a.shape)


def reference_axis_query(rows: torch.Tensor, n: int, m: int, tau: float) -> torch.Tensor:
    length = rows.shape[1]
    k = (m - n) * length // m
    values, order = torch.sort(rows, dim=1, stable=True)
    if k == 0:
        return torch.sigmoid((rows - values[:, :1]) / tau)
    t = ((values[:, k - 1] + values[:, k]) / 2)[:, None]  # k < length as n >= 1
    out = torch.sigmoid((rows - t) / tau)
    dropped = torch.zeros_like(rows, dtype=torch.bool)
    dropped.scatter_(1, order[:, :k], True)
    return out.masked_fill(dropped, 0.0)


def reference_maxq_mask(weight: torch.Tensor, n: int, m: int, preserve: float = 0.0,
                        tau: float = 1e-2) -> torch.Tensor:
    """Spec-literal ``S = L * (1 + F + P)``; same contract as ``maxq_mask``."""
    a = weight.detach().abs().to(torch.float64 if weight.dtype == torch.float64
                                 else torch.float32)
    a4 = a[:, :, None, None] if a.dim() == 2 else a
    o, c, kh, kw = a4.shape
    f = reference_axis_query(a4.reshape(o, c * kh * kw), n, m, tau).reshape(a4.shape)
    p = torch.zeros_like(a4)
    if kh * kw > 1:
        p = reference_axis_query(a4.reshape(o * c, kh * kw).t(), n, m, tau).t().reshape(a4.shape)
    mask = reference_hard_mask(a4, n, m, preserve) * (1 + f + p)
    return mask.reshape(weight.shape).to(weight.dtype)

"""The mask ("The mask" in docs/design.md) transcribed from its text, with Python sorts and loops.

Independent of the package (it shares no code with ``mmdet_maxq.sparsity``) and only for the
tiny tensors of the tests. Conventions it pins down, which the package documents too:

- Ties: Python's ``sorted`` is stable, so among equal values the lower index comes first:
  kept first by "keep the N largest", exempted first by "exempt the E smallest norms",
  dropped first by "drop the K smallest".
- A block's L1 norm is its float32 entries summed left to right in float32.
- ``K = floor((M - N) / M * row_len)``; ``K = 0`` (N = M) drops nothing and uses the row
  minimum as ``t``.
"""
import math

import torch


def stable_order(values, descending=False):
    """Indices of ``values`` in sorted order; equal values keep their index order."""
    return sorted(range(len(values)), key=lambda i: -values[i] if descending else values[i])


def spec_blocks(weight, m):
    """Blocks of M input channels in the (O, kh, kw, C) order: lists of 4-D indices."""
    w4 = weight[:, :, None, None] if weight.dim() == 2 else weight
    o, c, kh, kw = w4.shape
    return [[(oi, g * m + j, y, x) for j in range(m)] for oi in range(o) for y in range(kh)
            for x in range(kw) for g in range(c // m)]


def spec_hard_mask(weight, n, m, preserve=0.0):
    """0/1 float32 N:M mask with the incremental exemption."""
    a = weight.detach().abs().float()
    a4 = a[:, :, None, None] if a.dim() == 2 else a
    mask = torch.zeros_like(a4)
    blocks = spec_blocks(a4, m)
    norms = []
    for idx in blocks:
        vals = [float(a4[i]) for i in idx]
        for j in stable_order(vals, descending=True)[:n]:
            mask[idx[j]] = 1
        norm = torch.zeros((), dtype=torch.float32)
        for v in vals:
            norm = norm + torch.tensor(v, dtype=torch.float32)
        norms.append(float(norm))
    for b in stable_order(norms)[:math.floor(preserve * len(blocks))]:
        for i in blocks[b]:
            mask[i] = 1
    return mask.reshape(weight.shape)


def spec_axis_query(rows, n, m, tau):
    """Soft query of each row of the float32 matrix ``rows``."""
    out = torch.zeros_like(rows)
    length = rows.shape[1]
    k = math.floor((m - n) / m * length)
    for r in range(rows.shape[0]):
        vals = [float(v) for v in rows[r]]
        order = stable_order(vals)
        ranked = [vals[i] for i in order]
        t = torch.tensor(ranked[0] if k == 0 else (ranked[k - 1] + ranked[k]) / 2,
                         dtype=rows.dtype)
        dropped = set(order[:k])
        for i in range(length):
            if i not in dropped:
                out[r, i] = torch.sigmoid((rows[r, i] - t) / tau)
    return out


def spec_maxq_mask(weight, n, m, preserve=0.0, tau=1e-2):
    """``S = L * (1 + F + P)`` in float32."""
    a = weight.detach().abs().float()
    a4 = a[:, :, None, None] if a.dim() == 2 else a
    o, c, kh, kw = a4.shape
    f = spec_axis_query(a4.reshape(o, c * kh * kw), n, m, tau).reshape(a4.shape)
    p = torch.zeros_like(a4)
    if kh * kw > 1:
        rows = a4.reshape(o * c, kh * kw).t().contiguous()
        p = spec_axis_query(rows, n, m, tau).t().reshape(a4.shape)
    hard = spec_hard_mask(a4, n, m, preserve)
    return (hard * (1 + f + p)).reshape(weight.shape)

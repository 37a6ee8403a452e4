"""The mask of DESIGN.md section 3 written straight from its text, with Python loops.

Independent of the package (it shares no code with ``mmdet_maxq.sparsity``) and only for the
tiny tensors of the tests. Ties: among equal values the lower index counts as smaller when
the K smallest are dropped, and as larger when the N largest are kept (stable sorts).
"""
import math

import torch


def _stable_argsort(values, descending=False):
    idx = list(range(len(values)))
    return sorted(idx, key=lambda i: (-values[i] if descending else values[i], i))


def spec_hard_mask(weight, n, m, preserve=0.0):
    a = weight.detach().abs().double()
    w4 = a[:, :, None, None] if a.dim() == 2 else a
    o, c, kh, kw = w4.shape
    blocks = []  # (index tuples of the block, values)
    for oi in range(o):
        for y in range(kh):
            for x in range(kw):
                for g in range(c // m):
                    idx = [(oi, g * m + j, y, x) for j in range(m)]
                    blocks.append((idx, [float(w4[i]) for i in idx]))
    mask = torch.zeros_like(w4)
    for idx, vals in blocks:
        for j in _stable_argsort(vals, descending=True)[:n]:
            mask[idx[j]] = 1
    exempt = math.floor(preserve * len(blocks))
    norms = [float(torch.tensor(vals, dtype=torch.float32).sum()) for _, vals in blocks]
    for b in _stable_argsort(norms)[:exempt]:
        for i in blocks[b][0]:
            mask[i] = 1
    return mask.reshape(weight.shape)


def spec_axis_query(rows, n, m, tau):
    out = torch.zeros_like(rows)
    length = rows.shape[1]
    k = math.floor((m - n) / m * length)
    for r in range(rows.shape[0]):
        vals = [float(v) for v in rows[r]]
        order = _stable_argsort(vals)
        ranked = [vals[i] for i in order]
        t = (ranked[k - 1] + ranked[k]) / 2 if k > 0 else ranked[0]
        dropped = set(order[:k])
        for i in range(length):
            if i not in dropped:
                out[r, i] = torch.sigmoid((rows[r, i] - torch.tensor(t, dtype=rows.dtype)) / tau)
    return out


def spec_maxq_mask(weight, n, m, preserve=0.0, tau=1e-2):
    a = weight.detach().abs().float()
    w4 = a[:, :, None, None] if a.dim() == 2 else a
    o, c, kh, kw = w4.shape
    f = spec_axis_query(w4.reshape(o, c * kh * kw), n, m, tau).reshape(w4.shape)
    p = torch.zeros_like(w4)
    if kh * kw > 1:
        p = spec_axis_query(w4.reshape(o * c, kh * kw).t().contiguous(), n, m,
                            tau).t().reshape(w4.shape)
    hard = spec_hard_mask(weight, n, m, preserve).reshape(w4.shape).float()
    return (hard * (1 + f + p)).reshape(weight.shape)

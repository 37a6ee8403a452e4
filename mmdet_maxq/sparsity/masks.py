"""N:M and MaxQ masks (DESIGN.md section 3), by selection instead of sorting.

Every function works on ``A = |W|`` in float32 (float64 weights stay float64), reads it once
per axis, and finds thresholds with ``topk`` over the small block axis and ``kthvalue`` over
the long axes. Ties at a threshold are broken by position (the lower index counts as the
smaller for "drop the K smallest" and as the larger for "keep the N largest"), so exactly N
weights survive in every block and the result is deterministic on every device.
"""
import math

import torch

from .validation import check_preserve, check_tau, check_weight

__all__ = ['nm_mask', 'maxq_mask', 'axis_query', 'hard_nm_keep']


def _as_4d(a: torch.Tensor) -> torch.Tensor:
    return a[:, :, None, None] if a.dim() == 2 else a


def _magnitude(weight: torch.Tensor) -> torch.Tensor:
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    return weight.detach().abs().to(dtype)


def _mark_exactly_k(x: torch.Tensor, kth: torch.Tensor, k: int, smallest: bool) -> torch.Tensor:
    """Mark exactly ``k`` entries per row of ``x``: the ``k`` smallest (``smallest=True``) or
    largest, ``kth`` being the k-th such value of each row. Among entries equal to ``kth`` the
    lower indices are taken. The cumulative sum that resolves ties only runs when a row has
    more than one entry equal to its ``kth`` (rare for real weights, common for zeros).
    """
    marked = x <= kth if smallest else x >= kth
    if int(torch.count_nonzero(marked)) == k * x.shape[0]:
        return marked
    strict = x < kth if smallest else x > kth
    ties = marked & ~strict
    need = k - strict.sum(dim=1, keepdim=True)
    return strict | (ties & (ties.cumsum(dim=1) <= need))


def _keep_n_largest(blocks: torch.Tensor, n: int) -> torch.Tensor:
    """Mark the ``n`` largest entries of each row of ``blocks`` (ties: lower index first).

    Fast path: ``n - 1`` rounds of "drop the row maximum" give the n-th largest value when the
    top values are distinct; the count check proves it. Otherwise ``topk`` finds the true
    n-th largest value and the ties are resolved by position.
    """
    work = blocks.clone()
    for _ in range(n - 1):
        work.masked_fill_(work >= work.amax(dim=1, keepdim=True), -1.0)
    nth = work.amax(dim=1, keepdim=True)
    marked = blocks >= nth
    if int(torch.count_nonzero(marked)) == n * blocks.shape[0]:
        return marked
    nth = blocks.topk(n, dim=1, sorted=True).values[:, -1:]
    return _mark_exactly_k(blocks, nth, n, smallest=False)


def hard_nm_keep(a: torch.Tensor, n: int, m: int, preserve: float = 0.0) -> torch.Tensor:
    """Boolean keep-mask ``L`` of magnitudes ``a`` (2-D or 4-D), with block exemption.

    Blocks are M consecutive input channels at one (output, kernel position): ``a`` is permuted
    to ``(O, kh, kw, C)`` and cut into rows of M. The ``floor(preserve * num_blocks)`` blocks of
    smallest L1 norm (lower block index first among equal norms) keep every weight.
    """
    a4 = _as_4d(a)
    o, c, kh, kw = a4.shape
    blocks = a4.permute(0, 2, 3, 1).reshape(-1, m)
    if n == m:
        return torch.ones_like(a, dtype=torch.bool)
    keep = _keep_n_largest(blocks, n)
    exempt_count = math.floor(preserve * blocks.shape[0])
    if exempt_count > 0:
        norms = blocks.sum(dim=1)[None]
        kth = norms.kthvalue(exempt_count, dim=1, keepdim=True).values
        keep |= _mark_exactly_k(norms, kth, exempt_count, smallest=True)[0][:, None]
    return keep.reshape(o, kh, kw, c).permute(0, 3, 1, 2).reshape(a.shape)


def axis_query(rows: torch.Tensor, n: int, m: int, tau: float) -> torch.Tensor:
    """The soft axis query of a 2-D magnitude matrix, one row per axis element.

    With ``K = floor((M - N) / M * row_len)``, the K smallest entries of each row get 0 and
    every other entry ``sigmoid((a - t) / tau)``, ``t`` the mean of the K-th and (K+1)-th
    smallest values. With ``K = 0`` (only when N = M) nothing is zeroed and ``t`` is the
    smallest value.
    """
    length = rows.shape[1]
    k = (m - n) * length // m  # floor((M - N) / M * length), exactly
    if k == 0:
        t = rows.min(dim=1, keepdim=True).values
        dropped = None
    else:
        kth = rows.kthvalue(k, dim=1, keepdim=True).values
        dropped = _mark_exactly_k(rows, kth, k, smallest=True)
        # The (K+1)-th smallest is the smallest entry not dropped (no second selection pass).
        upper = rows.masked_fill(dropped, float('inf')).min(dim=1, keepdim=True).values
        t = (kth + upper) / 2
    out = (rows - t).div_(tau).sigmoid_()
    return out if dropped is None else out.masked_fill_(dropped, 0.0)


def nm_mask(weight: torch.Tensor, n: int, m: int, preserve: float = 0.0) -> torch.Tensor:
    """The hard N:M 0/1 mask of ``weight``.

    Args:
        weight (Tensor): A 4-D conv weight ``(O, C, kh, kw)`` or a 2-D linear weight ``(O, C)``;
            blocks of ``m`` run along ``C``.
        n (int): Weights kept per block.
        m (int): Block size; must divide ``C``.
        preserve (float): Share of blocks (smallest L1 norm first) exempt from N:M: their mask
            is all ones. Defaults to 0.

    Returns:
        Tensor: 0/1 mask of the shape, dtype and device of ``weight``.
    """
    check_weight(weight, n, m)
    check_preserve(preserve)
    return hard_nm_keep(_magnitude(weight), n, m, float(preserve)).to(weight.dtype)


def maxq_mask(weight: torch.Tensor, n: int, m: int, preserve: float = 0.0,
              tau: float = 1e-2) -> torch.Tensor:
    """The MaxQ soft mask ``S = L * (1 + F + P)`` of ``weight``.

    ``L`` is :func:`nm_mask` (with the incremental exemption), ``F`` the filter-axis query
    (rows: output filters) and ``P`` the kernel-position query (rows: kernel positions; zero for
    1x1 kernels and 2-D weights). Values are 0 where pruned, else in [1, 3].

    Args:
        weight (Tensor): 4-D conv or 2-D linear weight.
        n (int): Weights kept per block.
        m (int): Block size; must divide the input channels.
        preserve (float): Share of blocks exempt from N:M. Defaults to 0.
        tau (float): Sigmoid temperature of the soft queries. Defaults to 1e-2.

    Returns:
        Tensor: The mask, of the shape, dtype and device of ``weight`` (computed in float32
        for half-precision weights).
    """
    check_weight(weight, n, m)
    check_preserve(preserve)
    check_tau(tau)
    a = _magnitude(weight)
    a4 = _as_4d(a)
    o, c, kh, kw = a4.shape
    # Summed in the order of 1 + F + P, so the result is bit-identical to the spec's formula.
    mask = axis_query(a4.reshape(o, c * kh * kw), n, m, float(tau)).reshape(a4.shape)
    mask += 1.0
    if kh * kw > 1:
        mask += axis_query(a4.reshape(o * c, kh * kw).t(), n, m, float(tau)).t().reshape(a4.shape)
    mask.mul_(hard_nm_keep(a4, n, m, float(preserve)))
    return mask.reshape(weight.shape).to(weight.dtype)

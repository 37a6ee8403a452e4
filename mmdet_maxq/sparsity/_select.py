"""Exact selection primitives for the masks: thresholds without full sorts.

Every function returns exactly what a stable sort would give (the reference in
:mod:`mmdet_maxq.sparsity.reference` sorts); they only avoid the sort's cost:

- ``keep_n_largest``: top N of every block of M by "drop the block maximum" rounds;
- ``kth_pair_rows``: the K-th and (K+1)-th smallest of each row: one ``topk`` for many
  medium rows (filters), ``kth_smallest`` per row for a few long ones (kernel positions);
- ``kth_smallest``: exact order statistics of one long vector (a position row, the block
  norms), by bracketing them between two order statistics of a fixed pseudo-random sample,
  counting, and selecting among the few values in the bracket (a plain ``kthvalue`` when
  the count shows the bracket missed, which is rare).

Only the rows where a tie sits exactly at a threshold take the slower ``mark_k`` (a running
count of the tied entries, lower index first).
Comparisons write 0/1 floats, not bools: several times faster on the CPU, and multiplying
by them needs no type promotion.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ['indicator', 'mark_k', 'keep_n_largest', 'sequential_sum', 'smallest_e',
           'kth_pair_rows', 'kth_smallest', 'sampled_kth']

# Vectors shorter than this go straight to kthvalue; longer ones are sampled.
SAMPLED_MIN_LENGTH = 1 << 16
SAMPLE_SIZE = 4096
# Bracket half-width in binomial standard deviations: misses about 1 in 10^4 vectors.
SAMPLE_Z = 4.0
_sample_cache: Dict[Tuple[int, str], torch.Tensor] = {}


def indicator(compare, x: torch.Tensor, threshold) -> torch.Tensor:
    """``compare(x, threshold)`` as a 0/1 tensor of ``x``'s dtype and layout."""
    return compare(x, threshold, out=torch.empty_like(x))


def _count(ones: torch.Tensor) -> int:
    """Number of ones in a 0/1 float tensor (float32 sums of integers are exact below 2^24)."""
    if ones.numel() < (1 << 24):
        return int(ones.sum())
    return int(ones.sum(dtype=torch.float64))


def mark_k(x: torch.Tensor, k: int, kth: torch.Tensor, largest: bool, dim: int) -> torch.Tensor:
    """0/1 mark of the ``k`` largest (or smallest) entries along ``dim``, given the k-th value.

    Entries beyond ``kth`` are marked, and as many entries equal to ``kth`` as are still
    needed, lower index first (a running count): stable-sort semantics without a sort.

    Args:
        x (Tensor): Values without NaN.
        k (int): Entries to mark per slice along ``dim``.
        kth (Tensor): The k-th largest (smallest) value of each slice, broadcastable to ``x``.
        largest (bool): Mark the largest (True) or the smallest entries.
        dim (int): The axis of the slices.

    Returns:
        Tensor: 0/1 tensor of ``x``'s shape and dtype.
    """
    marked = indicator(torch.gt if largest else torch.lt, x, kth)
    ties = indicator(torch.eq, x, kth)
    # Counts are exact in float32 up to 2^24 entries per slice; longer slices count in float64.
    wide = torch.float64 if x.shape[dim] >= (1 << 24) else None
    need = k - marked.sum(dim=dim, keepdim=True, dtype=wide)
    first = indicator(torch.le, ties.cumsum(dim=dim, dtype=wide), need)
    return marked.add_(ties.mul_(first))


def keep_n_largest(columns: torch.Tensor, n: int) -> torch.Tensor:
    """0/1 mark of the ``n`` largest entries of each column of ``columns`` (>= 0, finite).

    Blocks are columns (``(m, num_blocks)``) so every step is an elementwise op between
    contiguous rows. Any per-block threshold ``u`` with exactly ``n`` entries ``>= u`` marks
    the unique correct top n (everything else is strictly smaller, so no tie crosses it).
    ``u`` comes from dropping the block maximum ``n - 1`` times (or the minimum ``m - n``
    times, whichever is fewer); a count proves it, and the blocks it fails for (ties) are
    redone exactly (lower index first).

    Args:
        columns (Tensor): ``(m, num_blocks)`` non-negative finite values.
        n (int): Entries kept per block, ``1 <= n <= m``.

    Returns:
        Tensor: 0/1 tensor of ``columns``' shape and dtype.
    """
    m = columns.shape[0]
    work = columns
    if n - 1 <= m - n:
        for _ in range(n - 1):
            # Dropped entries become 0, which is <= every magnitude.
            work = indicator(torch.lt, work, work.amax(dim=0, keepdim=True)).mul_(work)
        threshold = work.amax(dim=0, keepdim=True)
    else:
        for _ in range(m - n):
            work = work.masked_fill(work <= work.amin(dim=0, keepdim=True), math.inf)
        threshold = work.amin(dim=0, keepdim=True)
    # The marks overwrite the scratch copy when there is one (saves a full-size buffer).
    keep = torch.ge(columns, threshold,
                    out=work if work is not columns else torch.empty_like(columns))
    # From the top every block marks >= n entries, from the bottom <= n: the total shows
    # whether every block marks exactly n.
    if _count(keep) != n * columns.shape[1]:
        bad = (keep.sum(dim=0) != n).nonzero().squeeze(1)
        if 2 * bad.numel() > columns.shape[1]:  # mostly ties: redo all, no gather/scatter
            return mark_k(columns, n, columns.topk(n, dim=0).values[n - 1:n], True, dim=0)
        tied = columns[:, bad]
        keep[:, bad] = mark_k(tied, n, tied.topk(n, dim=0).values[n - 1:n], True, dim=0)
    return keep


def sequential_sum(columns: torch.Tensor) -> torch.Tensor:
    """Column sums of ``(m, num_blocks)`` added left to right (entry 0 + entry 1 + ...).

    A fixed order, so the block norms are bit-identical on every device and to the reference.
    """
    total = columns[0].clone()
    for row in columns[1:]:
        total += row
    return total


def _sample_index(length: int, device: torch.device) -> torch.Tensor:
    """A fixed pseudo-random sample of positions (with replacement), cached per length."""
    key = (length, str(device))
    index = _sample_cache.get(key)
    if index is None:
        generator = torch.Generator().manual_seed(length)
        index = torch.randint(length, (SAMPLE_SIZE, ), generator=generator).to(device)
        if len(_sample_cache) > 256:
            _sample_cache.clear()
        _sample_cache[key] = index
    return index


def sampled_kth(x: torch.Tensor, ks: Sequence[int]) -> Optional[List[torch.Tensor]]:
    """Exact order statistics of the 1-D ``x`` through a sampled bracket, or None on a miss.

    The bracket ``[lo, hi]`` is two order statistics of a fixed sample of ``x``, placed
    ``SAMPLE_Z`` binomial standard deviations around the wanted ranks. Counting proves it
    holds them (fewer than ``ks[0]`` entries below ``lo``, at least ``ks[-1]`` up to ``hi``);
    then with ``c`` entries below ``lo``, the k-th smallest of ``x`` is the ``(k - c)``-th
    smallest of the few entries inside. Returns None when the count shows a miss.
    """
    length = x.numel()
    sample = x[_sample_index(length, x.device)]
    size = sample.numel()
    q_lo, q_hi = ks[0] / length, ks[-1] / length
    r_lo = math.floor(q_lo * size - SAMPLE_Z * math.sqrt(size * q_lo * (1 - q_lo))) - 1
    r_hi = math.ceil(q_hi * size + SAMPLE_Z * math.sqrt(size * q_hi * (1 - q_hi))) + 2
    below = torch.zeros_like(x)
    inside = torch.ones_like(x)
    if r_lo >= 1:
        torch.lt(x, sample.kthvalue(r_lo).values, out=below)
        inside.sub_(below)
    if r_hi <= size:
        inside.sub_(indicator(torch.gt, x, sample.kthvalue(r_hi).values))
    n_below = _count(below)
    if not (n_below < ks[0] and ks[-1] <= n_below + _count(inside)):
        return None
    candidates = x[inside.bool()]
    return [candidates.kthvalue(k - n_below).values for k in ks]


def kth_smallest(x: torch.Tensor, ks: Sequence[int]) -> List[torch.Tensor]:
    """Exact ``k``-th smallest values (1-indexed) of the 1-D ``x`` for each ``k`` in ``ks``.

    Vectors of at least ``SAMPLED_MIN_LENGTH`` entries go through :func:`sampled_kth`;
    shorter ones, and the rare bracket misses, through ``kthvalue``.

    Args:
        x (Tensor): 1-D tensor without NaN (may be a strided view).
        ks (Sequence[int]): A few nearby ascending ranks in ``[1, len(x)]``.

    Returns:
        list[Tensor]: 0-d tensors, one per rank.
    """
    if x.numel() >= SAMPLED_MIN_LENGTH:
        found = sampled_kth(x, ks)
        if found is not None:
            return found
    return [x.kthvalue(k).values for k in ks]


def smallest_e(x: torch.Tensor, e: int) -> torch.Tensor:
    """Boolean mark of the ``e`` smallest entries of the 1-D ``x`` (lower index first).

    Args:
        x (Tensor): 1-D values without NaN.
        e (int): How many to mark, ``0 <= e``.

    Returns:
        Tensor: Boolean tensor of ``x``'s shape.
    """
    if e <= 0:
        return torch.zeros_like(x, dtype=torch.bool)
    if e >= x.numel():
        return torch.ones_like(x, dtype=torch.bool)
    kth = kth_smallest(x, [e])[0]
    marked = x <= kth
    if int(torch.count_nonzero(marked)) == e:
        return marked
    return mark_k(x, e, kth, largest=False, dim=0).bool()


def kth_pair_rows(rows: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The k-th and (k+1)-th smallest value of each row (``1 <= k < row length``).

    Few long rows (the kernel-position axis) go through :func:`kth_smallest` one by one;
    many rows through one ``topk`` that keeps the side of each row holding both values (the
    shorter of the k+1 smallest and the L-k+1 largest), then a ``topk`` of 2 on that side.

    Args:
        rows (Tensor): 2-D values without NaN (may be a strided view).
        k (int): Rank, ``1 <= k < rows.shape[1]``.

    Returns:
        tuple[Tensor, Tensor]: Two ``(rows, 1)`` tensors.
    """
    count, length = rows.shape
    if length >= SAMPLED_MIN_LENGTH and count <= 64:
        pairs = [torch.stack(kth_smallest(row, [k, k + 1])) for row in rows.unbind(0)]
        pair = torch.stack(pairs)
        return pair[:, :1], pair[:, 1:]
    if length - k + 1 <= k + 1:
        top = rows.topk(length - k + 1, dim=1, largest=True, sorted=False).values
        pair = top.topk(2, dim=1, largest=False, sorted=True).values
        return pair[:, :1], pair[:, 1:]
    bottom = rows.topk(k + 1, dim=1, largest=False, sorted=False).values
    pair = bottom.topk(2, dim=1, largest=True, sorted=True).values
    return pair[:, 1:], pair[:, :1]

"""Exact selection primitives for the masks: thresholds without full sorts, and no host sync.

Every function returns exactly what a stable sort would give (the reference in
``tests/sparsity/reference.py`` sorts); they only avoid the sort's cost. Off the CPU they
never read a tensor value on the host (no ``.item()``, ``bool(t)``, ``nonzero()``,
boolean-mask indexing, or Python branch on tensor values): every step is a fixed sequence of
tensor ops decided by shapes and Python numbers only, so on a GPU the whole mask is queued
without waiting for it. CPU tensors, where a host read is free, resolve ties only where a
check finds them (:data:`CPU_TIE_CHECK`).

- ``nth_largest_columns``: the N-th largest of every block (a small selection network of
  elementwise ``maximum`` / ``minimum`` over the M rows of the blocks);
- ``kth_pair_rows``: the K-th and (K+1)-th smallest of every row: one ``topk`` that keeps the
  side of each row holding both values, then a ``topk`` of 2 on that side;
- ``smallest_e``: the E smallest of a 1-D vector (the block norms), by ``kthvalue``;
- ``mark_k``: given such a threshold value, the entries strictly beyond it plus, by an integer
  running count, the first (or last) tied entries still needed: the tie rule of a stable sort,
  applied unconditionally (a row without ties at its threshold just needs all its tied
  entries). On the CPU, :func:`keep_n_largest`, :func:`smallest_e` and the axis queries take
  the plain threshold and run the count only on the rows (blocks) that a host read shows to
  have a tie at their threshold: usually none.

Values are selected on the integer view of the magnitudes (``int32`` for ``float32``,
``int64`` for ``float64``): for non-negative finite floats the bit patterns sort like the
values, and integer ``topk`` / ``kthvalue`` are faster on the CPU. Running counts are integer
``cumsum``: a floating-point ``cumsum`` raises on CUDA under
``torch.use_deterministic_algorithms(True)``. Marks are 0/1 floats, not bools: several times
faster to write on the CPU, and multiplying by them needs no type promotion.
"""
from typing import Tuple

import torch

__all__ = ['CPU_TIE_CHECK', 'host_check', 'indicator', 'mark_k', 'nth_largest_columns',
           'keep_n_largest', 'sequential_sum', 'smallest_e', 'kth_pair_rows', 'ordered_view']

# Float32 sums of 0/1 are exact below 2^24 entries; integer running counts fit int32 below 2^31.
_EXACT_FLOAT32_COUNT = 1 << 24
_INT32_COUNT = 1 << 31

#: CPU tensors only: run the tie resolution (several passes over the tensor) only on the rows
#: or blocks that a host read (free on the CPU) shows to have a tie at their threshold, usually
#: none. Off the CPU, or with this set to False, every mark goes through the unconditional,
#: sync-free resolution; both give the same masks (the tests run CPU tensors both ways).
CPU_TIE_CHECK = True


def host_check(x: torch.Tensor) -> bool:
    """Whether values of ``x`` may be read on the host to skip work (CPU, check enabled)."""
    return CPU_TIE_CHECK and x.device.type == 'cpu'


def _count(ones: torch.Tensor) -> int:
    """Number of ones in a 0/1 float CPU tensor (float32 sums are exact below 2^24 entries)."""
    wide = torch.float64 if ones.numel() >= _EXACT_FLOAT32_COUNT else None
    return int(ones.sum(dtype=wide))


def indicator(compare, x: torch.Tensor, threshold, out=None) -> torch.Tensor:
    """``compare(x, threshold)`` as a 0/1 tensor of ``x``'s dtype and layout (or into ``out``)."""
    return compare(x, threshold, out=torch.empty_like(x) if out is None else out)


_SAME_SIZE_INT = {torch.float64: torch.int64, torch.float32: torch.int32,
                  torch.float16: torch.int16, torch.bfloat16: torch.int16}


def ordered_view(x: torch.Tensor) -> torch.Tensor:
    """The integer view of non-negative finite floats, which sorts like the values.

    Args:
        x (Tensor): Floating-point values ``>= 0`` (``+0.0``, not ``-0.0``), no NaN.

    Returns:
        Tensor: ``x`` viewed as the signed integer type of its size; ``.view(x.dtype)`` turns
        selected entries back into values.
    """
    return x.view(_SAME_SIZE_INT[x.dtype])


def mark_k(x: torch.Tensor, k: int, kth: torch.Tensor, largest: bool, dim: int,
           lower_first: bool = True, out=None) -> torch.Tensor:
    """0/1 mark of the ``k`` largest (or smallest) entries along ``dim``, given the k-th value.

    Entries beyond ``kth`` are marked, and as many entries equal to ``kth`` as are still
    needed: the lowest-index ones (``lower_first``) or the highest-index ones. With
    ``lower_first`` that is what a stable sort in the same direction picks; the highest-index
    ties are what remains after a stable sort in the other direction took its first entries.

    Args:
        x (Tensor): Values without NaN.
        k (int): Entries to mark per slice along ``dim``, ``1 <= k <= x.shape[dim]``.
        kth (Tensor): The k-th largest (smallest) value of each slice, counting repeats, with
            a size-1 ``dim``.
        largest (bool): Mark the largest (True) or the smallest entries.
        dim (int): The axis of the slices.
        lower_first (bool): Which tied entries to mark first.
        out (Tensor, optional): Where to write the marks: a float tensor of ``x``'s shape,
            possibly ``x`` itself (its values are no longer needed).

    Returns:
        Tensor: 0/1 tensor of ``x``'s shape and dtype (``out`` when given).
    """
    length = x.shape[dim]
    ties = torch.eq(x, kth)
    marked = indicator(torch.gt if largest else torch.lt, x, kth, out=out)
    count = torch.int32 if length < _INT32_COUNT else torch.int64
    wide = torch.float64 if length >= _EXACT_FLOAT32_COUNT else None
    need = (k - marked.sum(dim=dim, keepdim=True, dtype=wide)).to(count)  # ties still to mark
    rank = ties.cumsum(dim=dim, dtype=count)  # 1, 2, ... along the tied entries
    if lower_first:
        chosen = rank <= need
    else:
        chosen = rank > rank.narrow(dim, length - 1, 1) - need
    return marked.add_(chosen.logical_and_(ties))


def nth_largest_columns(columns: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n``-th largest entry of each column of ``(m, num_blocks)``, counting repeats.

    An insertion network over the ``m`` rows: a running sorted list of the ``n`` largest rows
    so far (or of the ``m - n + 1`` smallest, whichever is shorter), each new row bubbled in
    by elementwise ``maximum`` / ``minimum`` (the last slot keeps only its winner). About
    ``min(n, m - n + 1) * m`` elementwise ops on rows of ``num_blocks``.

    Args:
        columns (Tensor): ``(m, num_blocks)`` values without NaN.
        n (int): ``1 <= n <= m``.

    Returns:
        Tensor: ``(1, num_blocks)``.
    """
    m = columns.shape[0]
    if n == 1:
        return columns.amax(dim=0, keepdim=True)
    if n == m:
        return columns.amin(dim=0, keepdim=True)
    if n - 1 <= m - n:
        size, winner, loser = n, torch.maximum, torch.minimum
    else:
        size, winner, loser = m - n + 1, torch.minimum, torch.maximum
    best = []  # best[0] is the most extreme row so far
    for row in columns.unbind(0):
        for j in range(len(best)):
            if j == size - 1:
                best[j] = winner(best[j], row)
                break
            best[j], row = winner(best[j], row), loser(best[j], row)
        else:
            best.append(row)
    return best[-1][None]


def keep_n_largest(columns: torch.Tensor, n: int) -> torch.Tensor:
    """0/1 mark of the ``n`` largest entries of each column of ``columns`` (>= 0, finite).

    Blocks are columns (``(m, num_blocks)``) so every step is an elementwise op between
    contiguous rows. The n-th largest value ``v`` of each block (:func:`nth_largest_columns`),
    then :func:`mark_k`: everything above ``v`` and the lowest-index entries equal to it.
    On the CPU (see :data:`CPU_TIE_CHECK`) ``>= v`` is taken as it is, and only the blocks
    where a count shows a tie at ``v`` (more than ``n`` marked) get the running count.

    Args:
        columns (Tensor): ``(m, num_blocks)`` non-negative finite values.
        n (int): Entries kept per block, ``1 <= n <= m``.

    Returns:
        Tensor: 0/1 tensor of ``columns``' shape and dtype.
    """
    kth = nth_largest_columns(ordered_view(columns), n).view(columns.dtype)
    if not host_check(columns):
        return mark_k(columns, n, kth, largest=True, dim=0)
    keep = indicator(torch.ge, columns, kth)
    # Every block marks >= n entries (more where a tie sits at its n-th largest value), so
    # the total shows whether any block needs the running count; only those get it.
    if _count(keep) != n * columns.shape[1]:
        tied = (keep.sum(dim=0) != n).nonzero().squeeze(1)
        keep[:, tied] = mark_k(columns[:, tied], n, kth[:, tied], largest=True, dim=0)
    return keep


def sequential_sum(columns: torch.Tensor) -> torch.Tensor:
    """Column sums of ``(m, num_blocks)`` added left to right (entry 0 + entry 1 + ...).

    A fixed order, so the block norms are bit-identical on every device and to the reference.
    """
    total = columns[0].clone()
    for row in columns[1:]:
        total += row
    return total


def smallest_e(x: torch.Tensor, e: int) -> torch.Tensor:
    """Boolean mark of the ``e`` smallest entries of the 1-D ``x`` (lower index first).

    The e-th smallest value by ``kthvalue``, then :func:`mark_k` (on the CPU only when a
    count shows a tie at that value).

    Args:
        x (Tensor): 1-D non-negative finite values.
        e (int): How many to mark, ``0 <= e``.

    Returns:
        Tensor: Boolean tensor of ``x``'s shape.
    """
    if e <= 0:
        return torch.zeros_like(x, dtype=torch.bool)
    if e >= x.numel():
        return torch.ones_like(x, dtype=torch.bool)
    kth = ordered_view(x).kthvalue(e, keepdim=True).values.view(x.dtype)
    if host_check(x):
        marked = x <= kth
        if int(torch.count_nonzero(marked)) == e:  # no tie at the e-th smallest
            return marked
    return mark_k(x, e, kth, largest=False, dim=0).bool()


def kth_pair_rows(rows: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The k-th and (k+1)-th smallest value of each row (``1 <= k < row length``).

    One ``topk`` keeps the side of each row holding both values (the shorter of the k+1
    smallest and the L-k+1 largest), then a ``topk`` of 2 on that side.

    Args:
        rows (Tensor): 2-D non-negative finite values (may be a strided view).
        k (int): Rank, ``1 <= k < rows.shape[1]``.

    Returns:
        tuple[Tensor, Tensor]: Two ``(rows, 1)`` tensors of ``rows``' dtype.
    """
    length = rows.shape[1]
    keys = ordered_view(rows)
    if length - k + 1 <= k + 1:
        top = keys.topk(length - k + 1, dim=1, largest=True, sorted=False).values
        pair = top.topk(2, dim=1, largest=False, sorted=True).values.view(rows.dtype)
        return pair[:, :1], pair[:, 1:]
    bottom = keys.topk(k + 1, dim=1, largest=False, sorted=False).values
    pair = bottom.topk(2, dim=1, largest=True, sorted=True).values.view(rows.dtype)
    return pair[:, 1:], pair[:, :1]

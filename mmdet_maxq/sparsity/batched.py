"""The masks of many weights at once: one packed computation, a fixed number of ops.

:func:`mmdet_maxq.sparsity.masks.maxq_mask` / ``nm_mask`` compute one weight's mask with
about a hundred small tensor ops. On a GPU each op costs a kernel launch and several
microseconds of host work whatever its size, so a model's refresh is bound by the number of
ops, not by the arithmetic. :class:`PackedMasks` computes the masks of a whole list of
weights (same N:M, method and temperature) with a number of ops that barely depends on how
many there are:

- the weights are concatenated into one flat vector ``|W|``;
- the hard N:M keep-mask runs the selection network of :mod:`._select` once over the blocks
  of every weight, gathered as the columns of one ``(m, total_blocks)`` matrix;
- every other selection (the ``E_l`` smallest block norms of weight ``l``; the ``K``
  smallest entries of every filter row and of every kernel-position row) is the start of a
  row in one *segmented stable sort*: each value is keyed by ``row << 31 | bits(value)`` (the
  bits of a non-negative float32 sort like its value), so one ``sort(stable=True)`` orders
  every row on its own while keeping each row at its place, lower index first among ties.
  A row's entry of sorted rank ``r`` is dropped (kept, exempt) by comparing ``r`` with the
  row's count: the tie rule of a stable sort, by construction. Float64 weights, whose bits do
  not leave room for the row, take two stable sorts (by value, then by row) instead.

The result is bit-identical to the per-weight functions (same elementwise arithmetic in the
same order: ``t = (low + high) / 2``, ``sigmoid((a - t) / tau)``, ``1 + F + P``, times the
0/1 keep-mask). Nothing reads a tensor value on the host, and every tensor has a shape fixed
by the weights' shapes, so the computation can be captured in a CUDA graph
(:meth:`PackedMasks.compute_flat` on static buffers). Everything is allowed under
``torch.use_deterministic_algorithms(True)``.

The index tensors are built once per list of shapes and device (:class:`PackedMasks`): an
int64 block-column gather per weight, an int64 kernel-position gather per weight of a conv
with ``kh * kw > 1``, and an int64 key base plus an int32 rank per entry of the segmented sort
(about 21.5 bytes per weight of a 1x1 conv, 41.5 of a 3x3 conv: some 700 MiB for ResNet-50's
52 sparse convs); a refresh needs about as much again while it runs (keys, permutation).
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch

from ._select import mark_k, nth_largest_columns, ordered_view, sequential_sum
from .validation import check_finite, check_nm, check_preserve, check_tau

__all__ = ['PackedMasks', 'work_dtype']

_ROW_SHIFT = 31  # non-negative float32 bit patterns are < 2^31


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the masks of ``dtype`` weights are computed in (float64 or float32)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class PackedMasks:
    """Precomputed layout for the masks of a fixed list of weight shapes.

    Args:
        shapes (Sequence[tuple]): Weight shapes, 4-D ``(O, C, kh, kw)`` or 2-D ``(O, C)``,
            ``C`` divisible by ``m``.
        n (int): Weights kept per block.
        m (int): Block size.
        method (str): ``'maxq'`` (soft mask ``L * (1 + F + P)``) or ``'srste'`` (hard 0/1).
        tau (float): MaxQ temperature. Defaults to 1e-2.
        device (torch.device | str): Where the weights live. Defaults to ``'cpu'``.
        dtype (torch.dtype): The weights' dtype. Defaults to float32.
    """

    def __init__(self, shapes: Sequence[tuple], n: int, m: int, method: str,
                 tau: float = 1e-2, device='cpu', dtype: torch.dtype = torch.float32):
        check_nm(n, m)
        check_tau(tau)
        if method not in ('maxq', 'srste'):
            raise ValueError(f"method must be 'maxq' or 'srste', got {method!r}")
        self.shapes = [tuple(int(s) for s in shape) for shape in shapes]
        for shape in self.shapes:
            if len(shape) not in (2, 4) or min(shape) < 1 or shape[1] % m:
                raise ValueError(f'cannot pack a weight of shape {shape} for {n}:{m} masks: '
                                 'it must be 2-D or 4-D, non-empty, with C divisible by m')
        if not self.shapes:
            raise ValueError('PackedMasks needs at least one weight shape')
        self.n, self.m, self.method, self.tau = n, m, method, float(tau)
        self.device, self.dtype = torch.device(device), dtype
        self.work = work_dtype(dtype)
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.total = sum(self.sizes)
        self.hard = n < m
        self.soft = method == 'maxq'
        if self.soft or self.hard:
            self._build()
        self._preserves: Optional[tuple] = None

    # ----------------------------------------------------------------- layout (one-time) ---
    def _build(self) -> None:
        m = self.m
        col_idx, p_idx = [], []
        f_rows, p_rows = [], []  # (length, drop count) of every soft-query row
        self.blocks = []
        offset = 0
        for shape, size in zip(self.shapes, self.sizes):
            o, c, kh, kw = shape if len(shape) == 4 else shape + (1, 1)
            flat = torch.arange(offset, offset + size, dtype=torch.int64)
            if self.hard:
                col_idx.append(flat.view(o, c // m, m, kh * kw).permute(2, 0, 3, 1)
                               .reshape(m, -1))
            self.blocks.append(size // m)
            if self.soft:
                length = c * kh * kw
                f_rows += [(length, (m - self.n) * length // m)] * o
                if kh * kw > 1:
                    p_idx.append(flat.view(o * c, kh * kw).t().reshape(-1))
                    length = o * c
                    p_rows += [(length, (m - self.n) * length // m)] * (kh * kw)
            offset += size
        # Rows of the segmented sort: filter rows (the flat weights as they are), then
        # kernel-position rows (gathered by p_idx), then one row of block norms per weight.
        soft_rows = f_rows + p_rows
        norm_rows = [(b, None) for b in self.blocks] if self.hard else []
        rows = soft_rows + norm_rows
        self.num_soft_rows = len(soft_rows)
        self.p_total = sum(length for length, _ in p_rows)
        lengths = torch.tensor([length for length, _ in rows], dtype=torch.int64)
        starts = torch.cumsum(lengths, 0) - lengths
        row_of = torch.repeat_interleave(torch.arange(len(rows), dtype=torch.int64), lengths)
        rank = torch.arange(int(lengths.sum()), dtype=torch.int64) - starts[row_of]
        # Marked: rank >= K (kept by a soft query), or rank < E (exempt norms), written as
        # one comparison ``sign * rank >= threshold`` (threshold 1 - E for the norm rows).
        sign = torch.ones(len(rows), dtype=torch.int64)
        sign[self.num_soft_rows:] = -1
        drops = torch.tensor([k for _, k in soft_rows], dtype=torch.int64)
        self._soft_thresholds = drops
        self._norm_starts = starts[self.num_soft_rows:]
        # The K-th and (K+1)-th smallest (sorted positions) of every soft row; the smallest
        # when K = 0 (N = M).
        soft_starts = starts[:self.num_soft_rows]
        low = soft_starts + (drops - 1).clamp(min=0)
        high = soft_starts + drops
        to = dict(device=self.device)
        self.col_idx = torch.cat(col_idx, 1).to(**to) if self.hard else None
        self.p_idx = torch.cat(p_idx).to(**to) if p_idx else None
        # int32 ranks (rows are shorter than 2^31); the row of each entry is kept once, as
        # the sort key's high bits for float32 (``row_key >> 31``), else as it is.
        self.signed_rank = (sign[row_of] * rank).to(torch.int32).to(**to)
        if self.work == torch.float32:
            self.row_key, self._row_of = (row_of << _ROW_SHIFT).to(**to), None
        else:
            self.row_key, self._row_of = None, row_of.to(**to)
        self.pair_pos = torch.stack([low, high]).to(**to) if self.soft else None
        self.thresholds = torch.empty(len(rows), dtype=torch.int64, device=self.device)
        self.sort_size = int(lengths.sum())

    def _set_thresholds(self, preserves: Sequence[float]) -> None:
        """Per-row thresholds: K for the soft rows, 1 - E_l for the norm rows (cached)."""
        key = tuple(preserves)
        if key == self._preserves:
            return
        if len(key) != len(self.shapes):
            raise ValueError(f'{len(key)} preserve rates for {len(self.shapes)} weights')
        for p in key:
            check_preserve(p)
        key = tuple(float(p) for p in key)
        if not (self.soft or self.hard):
            self._preserves = key
            return
        exempt = [math.floor(p * b) for p, b in zip(key, self.blocks)] if self.hard else []
        values = torch.cat([self._soft_thresholds,
                            1 - torch.tensor(exempt, dtype=torch.int64)])
        self.thresholds.copy_(values)
        self._preserves = key

    # ----------------------------------------------------------------- per refresh ---
    def pack(self, weights: Sequence[torch.Tensor], out: Optional[torch.Tensor] = None
             ) -> torch.Tensor:
        """The weights concatenated into one flat tensor (into ``out`` when given)."""
        return torch.cat([w.reshape(-1) for w in weights], out=out)

    def compute_flat(self, flat: torch.Tensor, names: Sequence[str] = ()) -> torch.Tensor:
        """The masks of the packed weights ``flat`` as one flat tensor of ``flat``'s dtype.

        Call :meth:`set_preserve` first (or use :meth:`masks`). A fixed sequence of ops
        decided by the shapes only: no host read off the CPU, static shapes.

        Args:
            flat (Tensor): The weights packed by :meth:`pack`.
            names (Sequence[str]): The weights' names for the non-finite error.

        Returns:
            Tensor: ``(total,)`` masks, weight ``l`` at ``sum(sizes[:l])``.
        """
        a = flat.to(self.work).abs_() if flat.dtype != self.work else flat.abs()
        self._check_finite(a, names)
        if not (self.soft or self.hard):  # hard N:M with N = M keeps everything
            return torch.ones_like(flat)
        parts = []
        if self.soft:
            parts.append(a)
            if self.p_idx is not None:
                parts.append(a.take(self.p_idx))
        keep = None
        if self.hard:
            columns = a.take(self.col_idx)
            keep = mark_k(columns, self.n, nth_largest_columns(ordered_view(columns), self.n)
                          .view(columns.dtype), largest=True, dim=0)
            parts.append(sequential_sum(columns))
        values = torch.cat(parts) if len(parts) > 1 else parts[0]
        perm = self._segmented_sort(values)
        row_of = self._row_of if self.row_key is None else self.row_key >> _ROW_SHIFT
        marked = torch.ge(self.signed_rank, self.thresholds.take(row_of)).to(self.work)
        marks = torch.empty_like(marked).scatter_(0, perm, marked)
        if self.hard:
            exempt = marks[values.numel() - keep.shape[1]:]
            torch.maximum(keep, exempt[None], out=keep)
            hard = torch.empty_like(a).scatter_(0, self.col_idx.view(-1), keep.view(-1))
            if not self.soft:
                return hard.to(flat.dtype)
        soft_size = self.total + self.p_total
        pair = values.take(perm.take(self.pair_pos))
        low, high = pair.unbind(0)
        thresh = low if self.n == self.m else (low + high) / 2
        query = (values[:soft_size] - thresh.take(row_of[:soft_size])).div_(self.tau)
        query = query.sigmoid_().mul_(marks[:soft_size])
        mask = query[:self.total].add_(1.0)
        if self.p_idx is not None:
            position = torch.zeros_like(a).scatter_(0, self.p_idx, query[self.total:])
            mask.add_(position)
        if self.hard:
            mask.mul_(hard)
        return mask.to(flat.dtype)

    def _segmented_sort(self, values: torch.Tensor) -> torch.Tensor:
        """The permutation that stably sorts every row of ``values`` on its own."""
        if self.row_key is not None:
            key = ordered_view(values).to(torch.int64).add_(self.row_key)
            return key.sort(stable=True).indices
        by_value = values.sort(stable=True).indices
        by_row = self._row_of.take(by_value).sort(stable=True).indices
        return by_value.take(by_row)

    def _check_finite(self, a: torch.Tensor, names: Sequence[str]) -> None:
        if a.device.type == 'cpu' and not bool(torch.isfinite(a.amax())):
            # Find the culprit for the message (a host read, free on the CPU).
            for piece, shape, name in zip(a.split(self.sizes), self.shapes,
                                          list(names) or ['weight'] * len(self.shapes)):
                check_finite(piece.view(shape), name=name, nonnegative=True)
        label = ', '.join(names) if names else f'{len(self.shapes)} packed weights'
        check_finite(a, name=f'one of the weights ({label})', nonnegative=True, sync=False)

    def set_preserve(self, preserves: Sequence[float]) -> None:
        """Set each weight's preserve rate (its share of blocks exempt from N:M)."""
        self._set_thresholds(preserves)

    @torch.no_grad()
    def masks(self, weights: Sequence[torch.Tensor], preserves: Sequence[float],
              names: Sequence[str] = ()) -> List[torch.Tensor]:
        """The masks of ``weights`` (shapes as built), each of its weight's shape.

        Args:
            weights (Sequence[Tensor]): The weights, on the device and of the dtype built for.
            preserves (Sequence[float]): Each weight's preserve rate, in [0, 1].
            names (Sequence[str]): Names for the non-finite error. Defaults to none.

        Returns:
            list[Tensor]: Views into one flat tensor.
        """
        self.check_weights(weights)
        self.set_preserve(preserves)
        flat = self.compute_flat(self.pack(weights), names)
        return [piece.view(shape) for piece, shape in zip(flat.split(self.sizes), self.shapes)]

    def check_weights(self, weights: Sequence[torch.Tensor]) -> None:
        """Raise ``ValueError`` unless ``weights`` match the shapes, device and dtype built for."""
        got = [(tuple(w.shape), w.device, w.dtype) for w in weights]
        want = [(s, self.device, self.dtype) for s in self.shapes]
        if len(got) != len(want) or any(
                gs != ws or gd.type != wd.type or gt != wt
                for (gs, gd, gt), (ws, wd, wt) in zip(got, want)):
            raise ValueError('the weights do not match the packed layout (shapes, device, '
                             'dtype); build a new PackedMasks for them')

    def layout(self) -> Tuple[int, int]:
        """(entries of the weights, entries of the segmented sort)."""
        return self.total, self.sort_size

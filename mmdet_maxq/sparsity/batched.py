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

Memory. Between refreshes a :class:`PackedMasks` keeps only small tables: per *row* of the
segmented sort (a filter, a kernel position of a conv, the block norms of a weight) its length
and threshold, two sorted positions per soft row (its K-th and (K+1)-th smallest), and a few
integers per kernel-position row and per weight. The row of every sort entry and the gathers of
the block columns and of the kernel-position rows are rebuilt at every refresh from those tables
by a fixed number of integer ops (``repeat_interleave`` with its ``output_size``, which reads
nothing on the host, then ``arange``, ``take`` of the per-row or per-weight constants, integer
``div`` / ``mul`` / ``add``), and freed with the refresh's other temporaries. Measured on
``meta`` (``tests/models/test_refresh_memory.py``) for ResNet-50's 52 sparse convs at 2:8
(23.4 M weights): 0.72 MiB kept, 0.03 bytes per weight (the earlier layout kept int64 / int32
index tensors of 31 bytes per weight, 698 MiB). While :meth:`~PackedMasks.compute_flat` runs
on float32 weights it peaks at 48 bytes per weight (1.05 GiB; earlier 75 on top of the 31
kept), at the stable sort: its 1.6 entries per weight (the weights, the kernel-position
copies, the block norms) as float32 values, int64 keys and the sort's int64 outputs. A
captured CUDA graph keeps its memory pool (about that peak) and its static input between
replays.
"""
import itertools
import math
from typing import List, Optional, Sequence

import torch

from ._select import mark_k, nth_largest_columns, ordered_view
from .validation import check_finite, check_nm, check_preserve, check_tau

__all__ = ['PackedMasks', 'work_dtype']

_ROW_SHIFT = 31  # non-negative float32 bit patterns are < 2^31
_INT32_LIMIT = (1 << 31) - 1


def _sequential_sum(columns: torch.Tensor, out: torch.Tensor) -> None:
    """``out = columns[0] + columns[1] + ...`` left to right, as ``maxq_mask`` sums norms."""
    torch.add(columns[0], columns[1], out=out)
    for row in columns[2:]:
        out.add_(row)


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
        """The per-row and per-weight tables the refresh rebuilds its index vectors from.

        Rows of the segmented sort, in order: every filter row (the flat weights as they
        are), then every kernel-position row of the convs with ``kh * kw > 1`` (gathered),
        then one row of block norms per weight (hard N:M only).
        """
        m, n = self.m, self.n
        dims = [s if len(s) == 4 else s + (1, 1) for s in self.shapes]
        offsets = list(itertools.accumulate([0] + self.sizes[:-1]))
        self.blocks = [size // m for size in self.sizes]
        self.blocks_total = self.total // m
        lengths = []
        p_first, p_stride = [], []  # per kernel-position row: its first weight, the stride
        if self.soft:
            lengths += [torch.full((o, ), c * kh * kw, dtype=torch.int64) for o, c, kh, kw in dims]
            for (o, c, kh, kw), offset in zip(dims, offsets):
                if kh * kw > 1:
                    lengths.append(torch.full((kh * kw, ), o * c, dtype=torch.int64))
                    p_first += [offset + pos for pos in range(kh * kw)]
                    p_stride += [kh * kw] * (kh * kw)
        self.num_filter_rows = sum(o for o, _, _, _ in dims) if self.soft else 0
        self.num_soft_rows = self.num_filter_rows + len(p_first)
        self.p_total = sum(o * c * kh * kw for o, c, kh, kw in dims if kh * kw > 1) \
            if self.soft else 0
        self.soft_size = self.total + self.p_total if self.soft else 0
        if self.hard:
            lengths.append(torch.tensor(self.blocks, dtype=torch.int64))
        lengths = torch.cat(lengths)
        starts = torch.cumsum(lengths, 0) - lengths
        self.sort_size = self.soft_size + (self.blocks_total if self.hard else 0)
        self._norm_starts = starts[self.num_soft_rows:].tolist()
        # Sorted positions are compared with per-row thresholds in int32 where they fit.
        self._pos_dtype = torch.int32 if self.sort_size <= _INT32_LIMIT else torch.int64
        to = dict(device=self.device)
        self.row_lengths = lengths.to(**to)
        # Marked (see compute_flat): sorted position >= start + K for a soft row (kept by the
        # query), -position >= 1 - (start + E) for a norm row (exempt); E is set per rate.
        drops = (m - n) * lengths[:self.num_soft_rows] // m
        thresholds = torch.cat([starts[:self.num_soft_rows] + drops,
                                1 - starts[self.num_soft_rows:]])
        self.thresholds = thresholds.to(self._pos_dtype).to(**to)
        if self.soft:
            # Sorted positions of the K-th and (K+1)-th smallest of every soft row; the
            # smallest twice when K = 0 (N = M).
            soft_starts = starts[:self.num_soft_rows]
            self.pair_pos = torch.stack([soft_starts + (drops - 1).clamp(min=0),
                                         soft_starts + drops]).to(**to)
        if p_first:
            # Entry q of the sort in a kernel-position row r is weight q * stride + c0.
            p_stride_t = torch.tensor(p_stride, dtype=torch.int64)
            p_starts = starts[self.num_filter_rows:self.num_soft_rows]
            self._p_stride = p_stride_t.to(**to)
            self._p_c0 = (torch.tensor(p_first, dtype=torch.int64)
                          - p_starts * p_stride_t).to(**to)
        if self.hard:
            # Block b (exemption order: b = (o * kh * kw + pos) * C / m + g) of a weight
            # starts at offset + (o * C + g * m) * P + pos, P = kh * kw; with t = b // (C / m)
            # and o = t // P that is offset + b * m * P + t * (1 - C * P) + o * (C * P - P).
            per_weight = [(c // m, kh * kw, m * kh * kw, 1 - c * kh * kw, c * kh * kw - kh * kw,
                           offset) for (o, c, kh, kw), offset in zip(dims, offsets)]
            block_starts = list(itertools.accumulate([0] + self.blocks[:-1]))
            columns = zip(*per_weight)
            self._block_tables = tuple(torch.tensor(values, dtype=torch.int64, **to)
                                       for values in (block_starts, *columns))
            self._channels = torch.arange(m, **to)[:, None]

    def _set_thresholds(self, preserves: Sequence[float]) -> None:
        """Per-row thresholds of the norm rows, ``1 - (start + E_l)`` (cached)."""
        key = tuple(preserves)
        if key == self._preserves:
            return
        if len(key) != len(self.shapes):
            raise ValueError(f'{len(key)} preserve rates for {len(self.shapes)} weights')
        for p in key:
            check_preserve(p)
        key = tuple(float(p) for p in key)
        if self.hard:
            values = [1 - (start + math.floor(p * b))
                      for start, p, b in zip(self._norm_starts, key, self.blocks)]
            self.thresholds[self.num_soft_rows:].copy_(
                torch.tensor(values, dtype=self._pos_dtype))
        self._preserves = key

    # ----------------------------------------------------------------- per refresh ---
    def pack(self, weights: Sequence[torch.Tensor], out: Optional[torch.Tensor] = None
             ) -> torch.Tensor:
        """The weights concatenated into one flat tensor (into ``out`` when given)."""
        return torch.cat([w.reshape(-1) for w in weights], out=out)

    @torch.no_grad()
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
        if not (self.soft or self.hard):  # hard N:M with N = M keeps everything
            a = flat.to(self.work).abs_() if flat.dtype != self.work else flat.abs()
            self._check_finite(a, names)
            return torch.ones_like(flat)
        # The sort entries: |W| (the filter rows), the kernel-position rows, the block norms.
        values = torch.empty(self.sort_size, dtype=self.work, device=flat.device)
        a = values[:self.total] if self.soft else torch.empty(
            self.total, dtype=self.work, device=flat.device)
        if flat.dtype != self.work:
            a.copy_(flat).abs_()
        else:
            torch.abs(flat, out=a)
        self._check_finite(a, names)
        rows = torch.repeat_interleave(self.row_lengths, output_size=self.sort_size)
        if self.p_total:
            torch.take(a, self._p_index(rows), out=values[self.total:self.soft_size])
        keep = base = step = None
        if self.hard:
            base, step = self._block_bases(rows)
            columns = a.take(self._block_index(base, step))
            del a
            _sequential_sum(columns, out=values[self.soft_size:])
            kth = nth_largest_columns(ordered_view(columns), self.n).view(columns.dtype)
            # Held through the sort as bools (a quarter of the floats).
            keep = mark_k(columns, self.n, kth, largest=True, dim=0, out=columns).bool()
            del columns, kth
        perm = self._segmented_sort(values, rows)
        del rows
        marks = self._marks(perm)
        pair = values.take(perm.take(self.pair_pos)) if self.soft else None
        del perm
        if self.hard:
            keep = torch.where(keep, 1.0, marks[None, self.soft_size:])  # exempt blocks too
            hard = torch.empty(self.total, dtype=self.work, device=flat.device)
            hard.scatter_(0, self._block_index(base, step).view(-1), keep.view(-1))
            del keep, base, step
            if not self.soft:
                return hard.to(flat.dtype)
        low, high = pair.unbind(0)
        thresh = low if self.n == self.m else (low + high) / 2
        rows = torch.repeat_interleave(self.row_lengths[:self.num_soft_rows],
                                       output_size=self.soft_size)
        query = values[:self.soft_size]  # |W| no longer needed: the query is written over it
        query.sub_(thresh.take(rows)).div_(self.tau).sigmoid_().mul_(marks[:self.soft_size])
        del marks
        mask = query[:self.total].add(1.0)
        if self.p_total:
            p_index = self._p_index(rows)
            del rows
            # 1 + F + P in that order: every weight of such a conv gets exactly one P entry.
            mask.scatter_(0, p_index, mask.take(p_index).add_(query[self.total:]))
        if self.hard:
            mask.mul_(hard)
        return mask.to(flat.dtype)

    def _p_index(self, rows: torch.Tensor) -> torch.Tensor:
        """Where each kernel-position entry of the sort comes from in the flat weights."""
        p_rows = rows[self.total:self.soft_size] - self.num_filter_rows
        position = torch.arange(self.total, self.soft_size, device=rows.device)
        return position.mul_(self._p_stride.take(p_rows)).add_(self._p_c0.take(p_rows))

    def _block_bases(self, rows: torch.Tensor):
        """Flat index of the first entry of every block, and its stride (``kh * kw``)."""
        weight = rows[self.soft_size:] - self.num_soft_rows
        block_start, groups, step, m_step, t_coef, o_coef, offset = (
            table.take(weight) for table in self._block_tables)
        b = torch.arange(self.blocks_total, device=rows.device).sub_(block_start)
        t = torch.div(b, groups, rounding_mode='floor')
        o = torch.div(t, step, rounding_mode='floor')
        base = b.mul_(m_step).add_(t.mul_(t_coef)).add_(o.mul_(o_coef)).add_(offset)
        return base, step

    def _block_index(self, base: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """``(m, total_blocks)`` flat indices of the blocks' entries (blocks as columns)."""
        return self._channels.mul(step[None]).add_(base[None])

    def _segmented_sort(self, values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The permutation that stably sorts every row of ``values`` on its own.

        ``rows`` (the row of every entry) is consumed: the float32 sort key is built in it.
        """
        if self.work == torch.float32:
            key = rows.bitwise_left_shift_(_ROW_SHIFT).add_(ordered_view(values))
            return key.sort(stable=True).indices
        by_value = values.sort(stable=True).indices
        by_row = rows.take(by_value).sort(stable=True).indices
        return by_value.take(by_row)

    def _marks(self, perm: torch.Tensor) -> torch.Tensor:
        """0/1 marks of the sort entries: kept by its soft query, or an exempt block norm.

        A row keeps its place in the sorted order, so the entry at sorted position ``s``
        belongs to the row of unsorted position ``s``: its rank in the row is
        ``s - start``. Soft rows mark ``s >= start + K``; norm rows, whose positions are
        negated, ``-s >= 1 - (start + E)``, i.e. their ``E`` first.
        """
        rows = torch.repeat_interleave(self.row_lengths, output_size=self.sort_size)
        thresholds = self.thresholds.take(rows)
        del rows
        position = torch.arange(self.sort_size, dtype=self._pos_dtype, device=perm.device)
        if self.hard:
            position[self.soft_size:].neg_()
        marked = torch.ge(position, thresholds, out=torch.empty(
            self.sort_size, dtype=self.work, device=perm.device))
        del position, thresholds
        return torch.empty_like(marked).scatter_(0, perm, marked)

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

"""N:M and MaxQ masks ("The mask" in docs/design.md), by selection instead of sorting.

All the work is done on ``A = |W|`` (float32 for float16/bfloat16/float32 weights, float64 for
float64 weights), computed once per call. Thresholds come from selections (see
:mod:`mmdet_maxq.sparsity._select`): a small ``maximum`` / ``minimum`` network over the M rows
of the blocks, ``topk`` on the filter rows and on the kernel-position rows, ``kthvalue`` on the
block norms. Ties at a threshold are resolved by an integer running count along every row,
unconditionally; only CPU tensors, where reading a value costs nothing, run it just on the
rows (blocks) that a host check shows to have a tie at their threshold, usually none
(:data:`mmdet_maxq.sparsity._select.CPU_TIE_CHECK`). Both ways give the same masks.

Ties: every selection behaves like a stable sort, i.e. among equal values the lower index is
taken first. "Keep the N largest" keeps the lower indices, "exempt the E smallest norms"
exempts the lower block indices, and "drop the K smallest" drops the lower indices. So exactly
N weights survive in every block and the mask is deterministic on every device.
The sort-based definition this module must equal is ``tests/sparsity/reference.py``.

No host-device synchronisation off the CPU: nothing here reads a tensor value on the host or
branches on one (only on shapes, the device type and the Python numbers N, M, preserve and
tau), so on a GPU a mask refresh is queued without waiting. The one check of the values,
that the weights are finite, raises ``ValueError`` at once on the CPU and goes to
``torch._assert_async`` elsewhere (see :func:`mmdet_maxq.sparsity.validation.check_finite`).
Every op used is allowed under ``torch.use_deterministic_algorithms(True)`` (running counts
are integer ``cumsum``; a floating-point ``cumsum`` raises there on CUDA).
"""
import math
from typing import Optional

import torch

from ._select import (host_check, indicator, keep_n_largest, kth_pair_rows, mark_k, sequential_sum,
                      smallest_e)
from .validation import check_finite, check_preserve, check_tau, check_weight

__all__ = ['nm_mask', 'maxq_mask', 'axis_query', 'hard_nm_keep', 'hard_keep_columns']


def _as_4d(a: torch.Tensor) -> torch.Tensor:
    return a[:, :, None, None] if a.dim() == 2 else a


def _magnitude(weight: torch.Tensor, name: str) -> torch.Tensor:
    """``|W|`` as a new contiguous float32 (float64 for float64) tensor, checked finite."""
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    w = weight.detach()
    a = w.to(dtype).abs_() if w.dtype != dtype else w.abs()
    a = a.contiguous()
    check_finite(a, name=name, nonnegative=True, sync=False)
    return a


def _block_columns(a4: torch.Tensor, m: int) -> torch.Tensor:
    """The blocks of ``a4`` as the columns of an ``(m, num_blocks)`` tensor.

    Columns run in ``(o, g, y, x)`` order (output, channel group, kernel row and column): the
    cheapest copy, as runs of ``kh * kw`` stay contiguous; a 1x1 kernel needs no copy (a
    strided view). The exemption counts blocks in ``(o, y, x, g)`` order instead
    (:func:`_exemption_order`).
    """
    o, c, kh, kw = a4.shape
    return a4.reshape(o, c // m, m, kh * kw).permute(2, 0, 1, 3).reshape(m, -1)


def _exemption_order(per_block: torch.Tensor, shape4: tuple, inverse: bool = False
                     ) -> torch.Tensor:
    """Reorder one value per block between the columns' order and the exemption's order.

    The exemption numbers blocks as the ``(O, kh, kw, C)`` layout cut into rows of M, i.e.
    ``((o * kh + y) * kw + x) * C / M + g`` (the order of its ties); the columns run
    ``((o * C / M + g) * kh + y) * kw + x``. ``inverse`` maps back.
    """
    o, c, kh, kw = shape4
    if kh * kw == 1:
        return per_block
    groups = per_block.numel() // (o * kh * kw)
    dims = (o, kh * kw, groups) if inverse else (o, groups, kh * kw)
    return per_block.view(dims).transpose(1, 2).reshape(-1)


def _columns_to_weight(columns: torch.Tensor, shape4: tuple) -> torch.Tensor:
    """View ``(m, num_blocks)`` columns as ``(O, C / M, M, kh, kw)``, matching the weight."""
    o, c, kh, kw = shape4
    m = columns.shape[0]
    return columns.view(m, o, c // m, kh, kw).permute(1, 2, 0, 3, 4)


def hard_keep_columns(a4: torch.Tensor, n: int, m: int, preserve: float = 0.0, *,
                      columns: Optional[torch.Tensor] = None) -> torch.Tensor:
    """0/1 keep-mask ``L`` of the 4-D magnitudes ``a4`` as ``(m, num_blocks)`` columns.

    Blocks are M consecutive input channels at one (output, kernel position); columns run in
    ``(o, g, y, x)`` order (see :func:`_columns_to_weight` for the way back to the weight's
    layout). The ``floor(preserve * num_blocks)`` blocks of smallest L1 norm (summed left to
    right; among equal norms the lower block index of the ``(O, kh, kw, C)`` layout first)
    keep every weight.

    Args:
        a4 (Tensor): Non-negative finite magnitudes ``(O, C, kh, kw)``.
        n (int): Weights kept per block.
        m (int): Block size, dividing ``C``.
        preserve (float): Share of blocks exempt from N:M.
        columns (Tensor, optional): ``_block_columns(a4, m)`` when the caller has it (and
            wants the buffer back as scratch once this returns); left unchanged.

    Returns:
        Tensor: 0/1 tensor ``(m, num_blocks)`` of ``a4``'s dtype.
    """
    if columns is None:
        columns = _block_columns(a4, m)
    if n == m:
        return torch.ones_like(columns)
    keep = keep_n_largest(columns, n)
    exempt_count = math.floor(preserve * columns.shape[1])
    if exempt_count > 0:
        norms = _exemption_order(sequential_sum(columns), a4.shape)
        exempt = _exemption_order(smallest_e(norms, exempt_count), a4.shape, inverse=True)
        torch.maximum(keep, exempt.to(keep.dtype)[None], out=keep)
    return keep


def hard_nm_keep(a: torch.Tensor, n: int, m: int, preserve: float = 0.0) -> torch.Tensor:
    """0/1 keep-mask ``L`` of the magnitudes ``a`` (2-D or 4-D), with block exemption.

    See :func:`hard_keep_columns`.

    Returns:
        Tensor: Contiguous 0/1 mask of ``a``'s shape and dtype.
    """
    a4 = _as_4d(a)
    keep = hard_keep_columns(a4, n, m, preserve)
    return _columns_to_weight(keep, a4.shape).reshape(a.shape).contiguous()


def axis_query(rows: torch.Tensor, n: int, m: int, tau: float,
               out: Optional[torch.Tensor] = None,
               scratch: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The soft axis query of a 2-D magnitude matrix, one row per axis element.

    With ``K = floor((M - N) / M * row_len)`` (computed exactly in integers), the K smallest
    entries of each row get 0 (lower index first among ties) and every other entry
    ``sigmoid((a - t) / tau)``, ``t`` the mean of the K-th and (K+1)-th smallest values.
    ``K < row_len`` always (``N >= 1``). ``K = 0`` only happens for N = M (rows are never
    shorter than M): then nothing is zeroed and ``t`` is the smallest value of the row.

    Args:
        rows (Tensor): Non-negative finite magnitudes, one row per axis element (may be a
            non-contiguous view).
        n (int): N of N:M.
        m (int): M of N:M.
        tau (float): Sigmoid temperature.
        out (Tensor, optional): Where to write the query: a float tensor of ``rows``' shape
            and dtype, possibly ``rows`` itself (its magnitudes are then destroyed; saves a
            buffer). Best with ``rows``' strides, so every elementwise step runs contiguous.
            Allocated when not given.
        scratch (Tensor, optional): A float buffer of ``rows``' shape and dtype for the
            kept-entry marks (destroyed), best with ``rows``' strides too; allocated when not
            given.

    Returns:
        Tensor: The query, same shape and layout as ``rows`` (``out`` when given).
    """
    length = rows.shape[1]
    k = (m - n) * length // m
    if k == 0:
        return torch.sub(rows, rows.amin(dim=1, keepdim=True), out=out).div_(tau).sigmoid_()
    low, high = kth_pair_rows(rows, k)
    # Kept: the L - K largest. ``high`` is the (L - K)-th largest; of the entries equal to it,
    # a stable ascending sort drops the lower indices first, so the higher ones are kept.
    # The marks are taken before the query overwrites the magnitudes.
    if not host_check(rows):
        kept = mark_k(rows, length - k, high, largest=True, dim=1, lower_first=False,
                      out=scratch)
    else:
        # CPU: "> low" is exact in every row without a tie at the threshold (low < high);
        # the rows with one (a host read) get the running count.
        tied = torch.eq(low, high).squeeze(1).nonzero().squeeze(1)
        fixed = None
        if tied.numel():
            fixed = mark_k(rows[tied], length - k, high[tied], largest=True, dim=1,
                           lower_first=False)
        kept = indicator(torch.gt, rows, low, out=scratch)
        if fixed is not None:
            kept[tied] = fixed
    return torch.sub(rows, (low + high) / 2, out=out).div_(tau).sigmoid_().mul_(kept)


def nm_mask(weight: torch.Tensor, n: int, m: int, preserve: float = 0.0, *,
            name: str = 'weight') -> torch.Tensor:
    """The hard N:M 0/1 mask of ``weight``.

    Args:
        weight (Tensor): A 4-D conv weight ``(O, C, kh, kw)`` (``C`` = in_channels / groups)
            or a 2-D linear weight ``(O, C)``; blocks of ``m`` run along ``C``.
        n (int): Weights kept per block.
        m (int): Block size; must divide ``C``.
        preserve (float): Share of blocks (smallest L1 norm first) exempt from N:M: their mask
            is all ones. Defaults to 0.
        name (str): What to call the weight in the non-finite error (e.g. the layer name
            ``'backbone.layer3.1.conv2'``). Defaults to ``'weight'``.

    Returns:
        Tensor: Contiguous 0/1 mask of the shape, dtype and device of ``weight``.

    Raises:
        ValueError: For bad arguments, and for NaN/Inf in a CPU ``weight``. On other devices
            non-finite weights trip ``torch._assert_async`` with the same message instead
            (no host sync; CUDA reports it as a device-side assert at a later sync).
    """
    check_weight(weight, n, m, check_finite=False)
    check_preserve(preserve)
    keep = hard_nm_keep(_magnitude(weight, name), n, m, float(preserve))
    return keep.to(weight.dtype)


@torch.no_grad()
def maxq_mask(weight: torch.Tensor, n: int, m: int, preserve: float = 0.0,
              tau: float = 1e-2, *, name: str = 'weight') -> torch.Tensor:
    """The MaxQ soft mask ``S = L * (1 + F + P)`` of ``weight``.

    ``L`` is :func:`nm_mask` (with the incremental exemption), ``F`` the filter-axis query
    (rows: output filters) and ``P`` the kernel-position query (rows: kernel positions; zero
    for 1x1 kernels and 2-D weights). Values are 0 where pruned, else in [1, 3].

    Args:
        weight (Tensor): 4-D conv weight ``(O, C, kh, kw)`` or 2-D linear weight ``(O, C)``.
        n (int): Weights kept per block.
        m (int): Block size; must divide the input channels ``C``.
        preserve (float): Share of blocks exempt from N:M, in [0, 1]. Defaults to 0.
        tau (float): Sigmoid temperature of the soft queries, > 0. Defaults to 1e-2.
        name (str): What to call the weight in the non-finite error (e.g. the layer name).
            Defaults to ``'weight'``.

    Returns:
        Tensor: Contiguous mask of the shape, dtype and device of ``weight`` (computed in
        float32 for half-precision weights).

    Raises:
        ValueError: As :func:`nm_mask` (non-finite weights: on the CPU only; elsewhere
            ``torch._assert_async``).
    """
    check_weight(weight, n, m, check_finite=False)
    check_preserve(preserve)
    check_tau(tau)
    a4 = _as_4d(_magnitude(weight, name))
    o, c, kh, kw = a4.shape
    tau = float(tau)
    # At most four buffers of the weight's size live at once, and never while a selection
    # holds its temporaries: |W| and the keep marks throughout; the block columns (a copy
    # for kernels larger than 1x1), then the scratch of P once L is out; P (3x3 and larger
    # kernels), allocated by its last step; F's scratch, allocated after its selection. P's
    # rows (one per kernel position) are a transposed view of |W|, and the scratch and P take
    # the same strides, so its elementwise steps run contiguous without a transposed copy.
    # F is written over |W| itself, which is no longer needed after it.
    columns = _block_columns(a4, m)
    keep = hard_keep_columns(a4, n, m, float(preserve), columns=columns)
    position = None
    if kh * kw > 1:
        position = axis_query(a4.view(o * c, kh * kw).t(), n, m, tau,
                              scratch=columns.view(o * c, kh * kw).t()).t()
    del columns
    mask = axis_query(a4.view(o, c * kh * kw), n, m, tau,
                      out=a4.view(o, c * kh * kw)).view(a4.shape)
    # Accumulated in the order of 1 + F + P so the result is bit-identical to the formula.
    mask += 1.0
    if position is not None:
        mask += position.view(a4.shape)
    mask.view(o, c // m, m, kh, kw).mul_(_columns_to_weight(keep, a4.shape))
    return mask.reshape(weight.shape).to(weight.dtype)

"""One refresh of every sparse conv's mask per training iteration, as one packed computation.

:func:`refresh_masks` is the entry point. The sparse convs are grouped by what their masks
depend on besides the weights (N, M, method, tau, device, dtype); each group's masks are
computed by one :class:`mmdet_maxq.sparsity.batched.PackedMasks` (a fixed, small number of
tensor ops for the whole group, no host-device synchronisation) and written into the convs'
``mask`` buffers by one ``torch._foreach_copy_``. On the CPU, where an op costs no launch,
the per-conv selection functions are faster than the packed sort and are used instead (same
masks, bit for bit); ``mmdet_maxq.sparsity._select.CPU_TIE_CHECK = False`` sends CPU
tensors down the packed path too.

With ``cuda_graph=True`` (``model.sparsity.cuda_graph`` in a config) a CUDA group's packed
computation is captured once in a ``torch.cuda.CUDAGraph`` on static buffers and replayed:
each refresh copies the weights into the static input (one ``cat``), updates the preserve
thresholds when the rate changed, replays the graph (one launch) and copies the static output
into the buffers.

The layouts are cached on the model (rebuilt when the convs, their shapes, devices or dtypes
change) in an attribute that deep copies (EMA models) and pickles as empty.
"""
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

from mmdet_maxq.sparsity import _select
from mmdet_maxq.sparsity.batched import PackedMasks
from .sparse_conv import SparseConv2d

_CACHE_ATTR = '_maxq_mask_refresh_cache'
_MAX_LAYOUTS = 8


class _Group:
    """The packed layout of one group of convs, and where its masks go."""

    def __init__(self, convs: Sequence[SparseConv2d], cuda_graph: bool):
        first = convs[0]
        weight = first.weight
        self.convs = list(convs)
        self.plan = PackedMasks([tuple(c.weight.shape) for c in convs], first.n, first.m,
                                first.method, first.tau, weight.device, weight.dtype)
        self.names = [c.layer_name for c in convs]
        self.buffers = [c.mask for c in convs]
        self.buffer_views = [b.view(-1) for b in self.buffers]
        self.weights = [c.weight for c in convs]
        self.graph = None
        self.static_in = self.static_out = self.static_pieces = None
        self.use_graph = cuda_graph and weight.device.type == 'cuda'

    def current(self, convs: Sequence[SparseConv2d]) -> bool:
        """Whether this layout still describes ``convs`` (same modules, tensors, shapes)."""
        return len(convs) == len(self.convs) and all(
            c is k and c.mask is b and c.weight is w and w.shape == b.shape
            and w.device == self.plan.device and w.dtype == self.plan.dtype
            for c, k, b, w in zip(convs, self.convs, self.buffers, self.weights))

    @torch.no_grad()
    def refresh(self) -> None:
        self.plan.set_preserve([c.preserve for c in self.convs])
        if self.use_graph:
            pieces = self._replay()
        else:
            flat = self.plan.compute_flat(self.plan.pack(self.weights), self.names)
            pieces = flat.split(self.plan.sizes)
        torch._foreach_copy_(self.buffer_views, list(pieces))

    def _replay(self) -> Tuple[torch.Tensor, ...]:
        if self.graph is None:
            self._capture()
        self.plan.pack(self.weights, out=self.static_in)
        self.graph.replay()
        return self.static_pieces

    def _capture(self) -> None:
        """Capture the packed computation on static buffers (warm-up on a side stream)."""
        self.static_in = self.plan.pack(self.weights)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.plan.compute_flat(self.static_in, self.names)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # The refresh may run inside an AMP forward: nothing in it is an autocast op, and
        # keeping autocast (and its cast cache) out of the capture keeps it so.
        with torch.autocast('cuda', enabled=False), torch.cuda.graph(graph):
            self.static_out = self.plan.compute_flat(self.static_in, self.names)
        self.static_pieces = self.static_out.split(self.plan.sizes)
        self.graph = graph


class _RefreshCache:
    """Layouts per group of convs; deep copies and pickles as empty (rebuilt on use)."""

    def __init__(self):
        self.groups: Dict[tuple, _Group] = {}

    def __deepcopy__(self, memo):
        return _RefreshCache()

    def __reduce__(self):
        return (_RefreshCache, ())


def _cache(model: nn.Module) -> _RefreshCache:
    cache = model.__dict__.get(_CACHE_ATTR)
    if not isinstance(cache, _RefreshCache):
        cache = _RefreshCache()
        # Set in __dict__ directly: not a submodule, parameter or buffer (no state-dict key).
        model.__dict__[_CACHE_ATTR] = cache
    return cache


def _group_key(conv: SparseConv2d) -> tuple:
    w = conv.weight
    return (conv.n, conv.m, conv.method, conv.tau, w.device, w.dtype)


def _per_conv(conv: SparseConv2d) -> bool:
    """CPU convs take the per-conv selection path (faster there than the packed sort)."""
    return conv.weight.device.type == 'cpu' and _select.CPU_TIE_CHECK


@torch.no_grad()
def refresh_convs(model: nn.Module, convs: Sequence[SparseConv2d],
                  cuda_graph: bool = False) -> None:
    """Recompute the masks of ``convs`` (sparse convs of ``model``) at their preserve rates.

    Args:
        model (nn.Module): Where the packed layouts are cached.
        convs (Sequence[SparseConv2d]): The convs to refresh.
        cuda_graph (bool): Replay the refresh of CUDA convs as a captured CUDA graph.
            Defaults to False.
    """
    grouped: Dict[tuple, List[SparseConv2d]] = {}
    for conv in convs:
        if _per_conv(conv):
            conv.update_mask()
        else:
            grouped.setdefault(_group_key(conv), []).append(conv)
    cache = _cache(model)
    for key, members in grouped.items():
        ids = (key, tuple(id(c) for c in members), cuda_graph)
        group = cache.groups.get(ids)
        if group is None or not group.current(members):
            if len(cache.groups) >= _MAX_LAYOUTS:  # e.g. many different sets of stale convs
                cache.groups.clear()
            group = cache.groups[ids] = _Group(members, cuda_graph)
        group.refresh()
        for conv in members:
            conv.mark_mask_current()

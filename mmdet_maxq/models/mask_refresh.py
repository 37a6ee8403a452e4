"""One refresh of every sparse layer's mask per training iteration, as one packed computation.

:func:`refresh_layers` does it for :func:`mmdet_maxq.models.refresh_masks` and the sparsified
model's forward pre-hook. The sparse layers (convs and linear layers alike) are grouped by
what their masks depend on besides the weights (N, M, method, tau, device, dtype); each
group's masks are computed by one :class:`mmdet_maxq.sparsity.batched.PackedMasks` (a fixed,
small number of tensor ops for the whole group, no host-device synchronisation), and each
layer's ``mask`` buffer is bound to its view of the result. Binding a new tensor instead of
writing into the old one keeps the mask that an earlier forward saved for its backward (the
hard STE) intact. On the CPU, where an op costs no launch, the per-layer selection functions
are faster than the packed sort and are used instead (same masks, bit for bit);
``mmdet_maxq.sparsity._select.CPU_TIE_CHECK = False`` sends CPU tensors down the packed path
too.

With ``cuda_graph=True`` (``model.sparsity.cuda_graph`` in a config) a CUDA group's packed
computation is captured once in a ``torch.cuda.CUDAGraph`` on static buffers and replayed:
each refresh copies the weights into the static input (one ``cat``), updates the preserve
thresholds when the rate changed, replays the graph (one launch) and clones the static output
(the next replay overwrites it).

The layouts are cached on the model (rebuilt when the convs, their shapes, devices or dtypes
change) in an attribute that deep copies (EMA models) and pickles as empty.
"""
from typing import Dict, List, Sequence

import torch
import torch.nn as nn

from mmdet_maxq.sparsity import _select
from mmdet_maxq.sparsity.batched import PackedMasks
from .sparse_layer import SparseLayerMixin

_CACHE_ATTR = '_maxq_mask_refresh_cache'
_MAX_LAYOUTS = 8


class _Group:
    """The packed layout of one group of sparse layers."""

    def __init__(self, layers: Sequence[SparseLayerMixin], cuda_graph: bool):
        first = layers[0]
        weight = first.weight
        self.layers = list(layers)
        self.plan = PackedMasks([tuple(c.weight.shape) for c in layers], first.n, first.m,
                                first.method, first.tau, weight.device, weight.dtype)
        self.names = [c.layer_name for c in layers]
        self.weights = [c.weight for c in layers]
        self.graph = None
        self.static_in = self.static_out = None
        self.use_graph = cuda_graph and weight.device.type == 'cuda'

    def current(self, layers: Sequence[SparseLayerMixin]) -> bool:
        """Whether this layout still describes ``layers`` (same modules, tensors, shapes)."""
        return len(layers) == len(self.layers) and all(
            c is k and c.weight is w and tuple(w.shape) == shape
            and w.device == self.plan.device and w.dtype == self.plan.dtype
            for c, k, w, shape in zip(layers, self.layers, self.weights, self.plan.shapes))

    @torch.no_grad()
    def refresh(self) -> None:
        self.plan.set_preserve([c.preserve for c in self.layers])
        if self.use_graph:
            flat = self._replay()
        else:
            flat = self.plan.compute_flat(self.plan.pack(self.weights), self.names)
        for layer, piece, weight in zip(self.layers, flat.split(self.plan.sizes),
                                        self.weights):
            layer.mask = piece.view(weight.shape)

    def _replay(self) -> torch.Tensor:
        if self.graph is None:
            self._capture()
        self.plan.pack(self.weights, out=self.static_in)
        self.graph.replay()
        return self.static_out.clone()

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
        self.graph = graph


class _RefreshCache:
    """Layouts per group of layers; deep copies and pickles as empty (rebuilt on use)."""

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


def _group_key(layer: SparseLayerMixin) -> tuple:
    w = layer.weight
    return (layer.n, layer.m, layer.method, layer.tau, w.device, w.dtype)


def _per_layer(layer: SparseLayerMixin) -> bool:
    """CPU layers take the per-layer selection path (faster there than the packed sort)."""
    return layer.weight.device.type == 'cpu' and _select.CPU_TIE_CHECK


@torch.no_grad()
def refresh_layers(model: nn.Module, layers: Sequence[SparseLayerMixin],
                   cuda_graph: bool = False) -> None:
    """Recompute the masks of ``layers`` (sparse layers of ``model``) at their preserve rates.

    Args:
        model (nn.Module): Where the packed layouts are cached.
        layers (Sequence[SparseLayerMixin]): The layers to refresh.
        cuda_graph (bool): Replay the refresh of CUDA layers as a captured CUDA graph.
            Defaults to False.
    """
    grouped: Dict[tuple, List[SparseLayerMixin]] = {}
    for layer in layers:
        if _per_layer(layer):
            layer.update_mask()
        else:
            grouped.setdefault(_group_key(layer), []).append(layer)
    cache = _cache(model)
    for key, members in grouped.items():
        ids = (key, tuple(id(c) for c in members), cuda_graph)
        group = cache.groups.get(ids)
        if group is None or not group.current(members):
            if len(cache.groups) >= _MAX_LAYOUTS:  # e.g. many different sets of stale layers
                cache.groups.clear()
            group = cache.groups[ids] = _Group(members, cuda_graph)
        group.refresh()
        for layer in members:
            layer.mark_mask_current()

"""Per-layer, per-stage and per-block N:M figures of a sparse model (behind
tools/sparsity_report.py). Convs and linear layers alike; every figure comes from
:func:`~mmdet_maxq.sparsity.nm_figures`."""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn as nn

from mmdet_maxq.models.sparse_layer import SparseLayerMixin
from mmdet_maxq.models.sparsify import layer_kind
from mmdet_maxq.sparsity import nm_figures
from mmdet_maxq.utils.names import block_prefix, stage_prefix


@dataclass
class LayerRow:
    """One conv or linear layer of the report. ``macs`` is per image at the probed input
    size."""
    name: str
    kind: str  # 'conv' or 'linear' (the keys of sparsify.LAYER_TYPES)
    shape: Tuple[int, ...]
    nm: str
    eligible: bool
    sparse: bool
    compliant: bool
    sparsity: float
    mean_multiplier: Optional[float]
    params: int
    nonzero: int
    macs: int

    @property
    def stage(self) -> str:
        return stage_prefix(self.name)

    @property
    def block(self) -> str:
        return block_prefix(self.name)

    @property
    def sparse_macs(self) -> float:
        """MACs on N:M hardware: N/M of the dense count for a compliant layer."""
        if not self.compliant:
            return float(self.macs)
        n, m = map(int, self.nm.split(':'))
        return self.macs * n / m


def report_layers(model: nn.Module, prefix: str = '') -> Dict[str, nn.Module]:
    """Every conv and linear layer (sparse or not) of ``model`` whose name starts with
    ``prefix``, in module order."""
    return {name: mod for name, mod in model.named_modules()
            if name.startswith(prefix) and layer_kind(mod) is not None}


@torch.no_grad()
def layer_macs(model: nn.Module, layers: Dict[str, nn.Module], image_size: Tuple[int, int]
               ) -> Dict[str, int]:
    """Multiply-accumulates of each layer for one image of ``image_size`` through ``model``.

    ``model`` is called with a ``(1, 3, H, W)`` tensor (a backbone, or a module whose forward
    takes images); a forward hook on each layer counts, at every call, ``output.numel()``
    times the weights one output sums over (``weight[0].numel()``): ``C / groups * kh * kw``
    for a conv, ``in_features`` for a linear layer, so a linear layer on ``L`` tokens counts
    ``L * in_features * out_features``. A layer called several times (a head shared over
    levels) sums its calls; a layer never called (``nn.MultiheadAttention.out_proj``, whose
    weight is read without calling it) counts 0.
    """
    macs: Dict[str, int] = {}
    handles = []
    for name, layer in layers.items():

        def record(mod, inputs, output, name=name):
            macs[name] = macs.get(name, 0) + int(output.numel() * mod.weight[0].numel())

        handles.append(layer.register_forward_hook(record))
    try:
        param = next(model.parameters())
        model(torch.zeros(1, 3, *image_size, device=param.device, dtype=param.dtype))
    finally:
        for handle in handles:
            handle.remove()
    return macs


def report_rows(layers: Dict[str, nn.Module], n: int, m: int,
                macs: Optional[Dict[str, int]] = None, progress: Callable = None
                ) -> List[LayerRow]:
    """A :class:`LayerRow` for each layer; sparse layers are measured on ``W * S`` with their
    own N:M, the others at ``n:m``."""
    rows = []
    names = list(layers)
    for name in (progress(names) if progress else names):
        layer = layers[name]
        sparse = isinstance(layer, SparseLayerMixin)
        with torch.no_grad():
            if sparse and not layer.mask_is_current():
                layer.update_mask()
            figures = nm_figures(layer.weight, layer.n if sparse else n,
                                 layer.m if sparse else m, layer.mask if sparse else None)
        rows.append(LayerRow(
            name=name, kind=layer_kind(layer), shape=figures.shape,
            nm=f'{figures.n}:{figures.m}', eligible=figures.eligible, sparse=sparse,
            compliant=figures.compliant, sparsity=figures.sparsity,
            mean_multiplier=figures.mean_multiplier, params=figures.numel,
            nonzero=figures.nonzero, macs=(macs or {}).get(name, 0)))
    return rows


def group_totals(rows: Iterable[LayerRow], key: Callable[[LayerRow], str]
                 ) -> 'OrderedDict[str, Dict[str, float]]':
    """Sums per group (first-seen order) and ``total``: layers, convs, linear layers, sparse,
    compliant, params, non-zeros, MACs dense and N:M.

    Args:
        rows (Iterable[LayerRow]): The report rows.
        key (callable): The group of a row, e.g. ``lambda row: row.block``.
    """
    totals: 'OrderedDict[str, Dict[str, float]]' = OrderedDict()
    for row in rows:
        for group in (key(row), 'total'):
            t = totals.setdefault(group, dict(layers=0, conv=0, linear=0, sparse=0,
                                              compliant=0, params=0, nonzero=0, macs=0,
                                              sparse_macs=0.0))
            t['layers'] += 1
            t[row.kind] += 1
            t['sparse'] += int(row.sparse)
            t['compliant'] += int(row.compliant)
            t['params'] += row.params
            t['nonzero'] += row.nonzero
            t['macs'] += row.macs
            t['sparse_macs'] += row.sparse_macs
    if 'total' in totals:
        totals.move_to_end('total')
    return totals


def stage_totals(rows: Iterable[LayerRow]) -> 'OrderedDict[str, Dict[str, float]]':
    """:func:`group_totals` per stage (``backbone.layer1``, ``backbone.stages.0``)."""
    return group_totals(rows, lambda row: row.stage)


def block_totals(rows: Iterable[LayerRow]) -> 'OrderedDict[str, Dict[str, float]]':
    """:func:`group_totals` per block (``backbone.layer1.0``, ``backbone.stages.0.blocks.1``,
    ``backbone.layers.3``)."""
    return group_totals(rows, lambda row: row.block)

"""Per-layer and per-stage N:M figures of a sparse detector (behind tools/sparsity_report.py)."""
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn as nn

from mmdet_maxq.models.sparse_conv import SparseConv2d
from mmdet_maxq.sparsity import layer_summary
from mmdet_maxq.utils.names import stage_prefix


@dataclass
class LayerRow:
    """One conv of the report. ``macs`` is per image at the probed input size."""
    name: str
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
    def sparse_macs(self) -> float:
        """MACs on N:M hardware: N/M of the dense count for a compliant layer."""
        if not self.compliant:
            return float(self.macs)
        n, m = map(int, self.nm.split(':'))
        return self.macs * n / m


@torch.no_grad()
def conv_macs(model: nn.Module, convs: Dict[str, nn.Conv2d], image_size: Tuple[int, int]
              ) -> Dict[str, int]:
    """Multiply-accumulates of each conv for one image of ``image_size`` through ``model``.

    ``model`` is called with a ``(1, 3, H, W)`` tensor (a backbone, or a module whose forward
    takes images); each conv's output size is recorded by a forward hook.
    """
    macs: Dict[str, int] = {}
    handles = []
    for name, conv in convs.items():

        def record(mod, inputs, output, name=name):
            k = mod.weight.shape[1] * mod.weight.shape[2] * mod.weight.shape[3]
            macs[name] = int(output.shape[1] * output.shape[2] * output.shape[3] * k)

        handles.append(conv.register_forward_hook(record))
    try:
        param = next(model.parameters())
        model(torch.zeros(1, 3, *image_size, device=param.device, dtype=param.dtype))
    finally:
        for handle in handles:
            handle.remove()
    return macs


def report_rows(convs: Dict[str, nn.Conv2d], n: int, m: int,
                macs: Optional[Dict[str, int]] = None, progress: Iterable = None
                ) -> List[LayerRow]:
    """A :class:`LayerRow` for each conv; sparse convs are measured on ``W * S``."""
    rows = []
    names = list(convs)
    for name in (progress(names) if progress else names):
        conv = convs[name]
        sparse = isinstance(conv, SparseConv2d)
        with torch.no_grad():
            weight = conv.effective_weight() if sparse else conv.weight
            mask = conv.mask if sparse else None
            lm, ln = (conv.m, conv.n) if sparse else (m, n)
            summary = layer_summary(weight, ln, lm, mask=mask)
        rows.append(LayerRow(
            name=name, shape=tuple(conv.weight.shape), nm=f'{ln}:{lm}',
            eligible=bool(summary['eligible']), sparse=sparse,
            compliant=bool(summary['eligible'] and summary['compliant']),
            sparsity=float(summary['sparsity']), mean_multiplier=summary['mean_multiplier'],
            params=weight.numel(), nonzero=int((weight != 0).sum()),
            macs=(macs or {}).get(name, 0)))
    return rows


def stage_totals(rows: List[LayerRow]) -> 'OrderedDict[str, Dict[str, float]]':
    """Per-stage sums: layers, sparse, compliant, params, non-zeros, MACs dense and N:M."""
    totals: 'OrderedDict[str, Dict[str, float]]' = OrderedDict()
    for row in rows:
        for key in (row.stage, 'total'):
            t = totals.setdefault(key, dict(layers=0, sparse=0, compliant=0, params=0,
                                            nonzero=0, macs=0, sparse_macs=0.0))
            t['layers'] += 1
            t['sparse'] += int(row.sparse)
            t['compliant'] += int(row.compliant)
            t['params'] += row.params
            t['nonzero'] += row.nonzero
            t['macs'] += row.macs
            t['sparse_macs'] += row.sparse_macs
    if 'total' in totals:
        totals.move_to_end('total')
    return totals

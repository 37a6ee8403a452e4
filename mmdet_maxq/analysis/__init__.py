"""Back-ends of the analysis tools: tools/sparsity_report.py and tools/ap_table.py."""
from mmdet_maxq import requires_openmmlab  # noqa: F401  (first: a clear error without the stack)
from .sparsity_report import (LayerRow, block_totals, group_totals, layer_macs, report_layers,
                              report_rows, stage_totals)

__all__ = ['LayerRow', 'block_totals', 'group_totals', 'layer_macs',
           'report_layers', 'report_rows', 'stage_totals']

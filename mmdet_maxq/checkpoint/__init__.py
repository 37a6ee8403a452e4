"""Checkpoint import: format detection, key mapping and conversion of sparse ImageNet ResNets."""
from mmdet_maxq import requires_openmmlab  # noqa: F401  (first: a clear error without the stack)
from .convert import (FOLD_BY_METHOD, METHODS, ConversionResult, LayerReport, StageReport,
                      convert_checkpoint, convert_state_dict, load_checkpoint_file, resolve_fold,
                      save_checkpoint_atomic)
from .formats import (FORMATS, CheckpointError, detect_format, extract_state_dict, infer_depth,
                      infer_widths, map_to_backbone, resnet_shapes, strip_wrapper_prefixes)

__all__ = [
    'CheckpointError', 'ConversionResult', 'FOLD_BY_METHOD', 'FORMATS', 'LayerReport',
    'METHODS', 'StageReport', 'convert_checkpoint', 'convert_state_dict', 'detect_format',
    'extract_state_dict', 'infer_depth', 'infer_widths', 'load_checkpoint_file',
    'map_to_backbone', 'resnet_shapes', 'resolve_fold', 'save_checkpoint_atomic',
    'strip_wrapper_prefixes'
]

"""Checkpoints: import of sparse ImageNet ResNets (format detection, key mapping, conversion)
and the masks of a sparse training checkpoint."""
from mmdet_maxq import requires_openmmlab  # noqa: F401  (first: a clear error without the stack)
from .convert import (FOLD_BY_METHOD, METHODS, ConversionResult, LayerReport, StageReport,
                      convert_checkpoint, convert_state_dict, load_checkpoint_file, resolve_fold,
                      save_checkpoint_atomic)
from .formats import (FORMATS, CheckpointError, detect_format, extract_state_dict, infer_depth,
                      infer_widths, map_to_backbone, resnet_shapes, strip_wrapper_prefixes)
from .masks import checkpoint_masks

__all__ = [
    'CheckpointError', 'ConversionResult', 'FOLD_BY_METHOD', 'FORMATS', 'LayerReport',
    'METHODS', 'StageReport', 'checkpoint_masks', 'convert_checkpoint', 'convert_state_dict',
    'detect_format',    'extract_state_dict', 'infer_depth', 'infer_widths', 'load_checkpoint_file',
    'map_to_backbone', 'resnet_shapes', 'resolve_fold', 'save_checkpoint_atomic',
    'strip_wrapper_prefixes'
]

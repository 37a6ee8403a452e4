"""Checkpoint import: format detection, key mapping and conversion of sparse ImageNet ResNets."""
from .convert import (ConversionResult, LayerReport, StageReport, convert_checkpoint,
                      convert_state_dict, load_checkpoint_file, save_checkpoint_atomic)
from .formats import (FORMATS, CheckpointError, detect_format, extract_state_dict, infer_depth,
                      map_to_backbone, resnet_shapes, strip_wrapper_prefixes)

__all__ = [
    'CheckpointError', 'ConversionResult', 'FORMATS', 'LayerReport', 'StageReport',
    'convert_checkpoint', 'convert_state_dict', 'detect_format', 'extract_state_dict',
    'infer_depth', 'load_checkpoint_file', 'map_to_backbone', 'resnet_shapes',
    'save_checkpoint_atomic', 'strip_wrapper_prefixes'
]

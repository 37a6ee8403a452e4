"""Imported first by every subpackage that needs the OpenMMLab stack (all but ``sparsity``).

Without the whole stack the import fails here, with one ``ImportError`` naming every missing
package and the fix, instead of a bare ``No module named 'mmdet'`` from whichever line imports
it first.
"""
from .stack import SETUP_HINT, missing_openmmlab

_missing = missing_openmmlab()
if _missing:
    raise ImportError(f'mmdet-maxq: everything but mmdet_maxq.sparsity needs MMEngine, mmcv, '
                      f'MMDetection and mmpretrain, but cannot import {", ".join(_missing)}. '
                      f'{SETUP_HINT}')

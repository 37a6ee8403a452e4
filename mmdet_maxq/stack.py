"""Whether the OpenMMLab stack can be imported, found out without importing any of it.

``mmdet_maxq.sparsity`` (the mask math) needs PyTorch alone; the rest of the package needs
MMEngine, mmcv, MMDetection and mmpretrain. Python runs the package's ``__init__`` before any
subpackage, so that ``__init__`` checks and registers everything only when all four can be
imported (:func:`missing_openmmlab`), and otherwise imports nothing from OpenMMLab. Each
subpackage that needs the stack imports :mod:`mmdet_maxq.requires_openmmlab` first, whose
import fails with one clear ``ImportError`` naming what is missing and the fix. This module
imports the standard library only.
"""
import importlib.util
from typing import List

__all__ = ['OPENMMLAB', 'SETUP_HINT', 'missing_openmmlab']

# Every one of them is in setup.cfg's install_requires (tests/test_version_check.py checks).
OPENMMLAB = ('mmengine', 'mmcv', 'mmdet', 'mmpretrain')
SETUP_HINT = ('To fix it, run `bash tools/setup_env.sh` (or `make setup`); the mask math '
              'alone, `mmdet_maxq.sparsity`, needs PyTorch only')


def missing_openmmlab() -> List[str]:
    """The OpenMMLab packages the import system cannot find, each with the reason.

    ``importlib.util.find_spec`` locates a top-level package without running it: the check
    costs a path search and imports nothing.

    Returns:
        list[str]: E.g. ``['mmpretrain (not found)']``; empty when all of :data:`OPENMMLAB`
        can be imported.
    """
    missing = []
    for name in OPENMMLAB:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(f'{name} (not found)')
        except (ImportError, ValueError) as err:  # a finder refused it; a spec-less module
            missing.append(f'{name} ({err})')
    return missing

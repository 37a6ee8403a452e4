"""mmdet-maxq: MaxQ N:M sparsity for MMDetection 3.x.

Importing the package (``custom_imports=dict(imports=['mmdet_maxq'])`` in a config does it)
checks the installed versions against ``install_requires``, lets MMEngine checkpoints load
under ``torch.load(weights_only=True)``, and registers the model wrapper and hooks in
MMDetection's registries (``RandomStateHook`` in MMEngine's root one, which every scope sees).

The mask math, ``mmdet_maxq.sparsity``, is plain PyTorch: ``import mmdet_maxq.sparsity`` works
with PyTorch alone. Where MMEngine, mmcv, MMDetection or mmpretrain cannot be imported, the
package checks and registers nothing and imports nothing from OpenMMLab (warning when only
part of the stack is there); its other subpackages then raise an ``ImportError`` naming what
is missing (see :mod:`mmdet_maxq.stack`).
"""
import warnings

from .stack import OPENMMLAB, SETUP_HINT, missing_openmmlab
from .version import __version__

_missing = missing_openmmlab()
if not _missing:
    from .version_check import check_versions

    check_versions()

    from .checkpoint.safe_load import allow_mmengine_checkpoints

    allow_mmengine_checkpoints()

    from . import datasets, engine, models  # noqa: F401
elif len(_missing) < len(OPENMMLAB):
    # A broken install rather than a PyTorch-only one: say why a config's
    # custom_imports=['mmdet_maxq'] will find no SparseDetector.
    warnings.warn(f'mmdet-maxq: cannot import {", ".join(_missing)}, so the sparse models and '
                  f'hooks are not registered. {SETUP_HINT}')

__all__ = ['__version__']

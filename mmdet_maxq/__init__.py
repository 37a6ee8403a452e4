"""mmdet-maxq: MaxQ N:M sparsity for MMDetection 3.x.

Importing the package (``custom_imports=dict(imports=['mmdet_maxq'])`` in a config does it)
checks the installed versions against ``install_requires``, lets MMEngine checkpoints load
under ``torch.load(weights_only=True)``, and registers the model wrapper and hooks in
MMDetection's registries (``RandomStateHook`` in MMEngine's root one, which every scope sees).

The mask math, ``mmdet_maxq.sparsity``, is plain PyTorch: ``import mmdet_maxq.sparsity`` works
with PyTorch alone. Where the OpenMMLab stack cannot be imported, such an import skips the
check and the registration (see :mod:`mmdet_maxq.torch_only`).
"""
from .torch_only import require_openmmlab, torch_only_import
from .version import __version__

if not torch_only_import():
    from .version_check import check_versions

    check_versions()
    require_openmmlab()

    from .checkpoint.safe_load import allow_mmengine_checkpoints

    allow_mmengine_checkpoints()

    from . import datasets, engine, models  # noqa: F401

__all__ = ['__version__']

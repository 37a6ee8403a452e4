"""Which imports of mmdet-maxq need PyTorch alone (no OpenMMLab package).

``mmdet_maxq.sparsity`` (the mask math) is plain PyTorch, but Python runs the package's
``__init__`` before any subpackage, and that ``__init__`` checks the OpenMMLab versions and
registers the models and hooks. It skips both when, and only when, the import asks for a
torch-only subpackage (``import mmdet_maxq.sparsity``, ``from mmdet_maxq.sparsity import
nm_mask``) and the OpenMMLab stack cannot be imported: with the stack there, every import
registers everything, so a later ``custom_imports=['mmdet_maxq']`` finds it done.
"""
import importlib.util
import sys
from typing import Optional

# Subpackages whose code imports nothing but PyTorch, numpy and the standard library.
TORCH_ONLY_SUBPACKAGES = ('mmdet_maxq.sparsity', 'mmdet_maxq.deploy.semi_structured')
OPENMMLAB = ('mmengine', 'mmcv', 'mmdet')


def requested_module(package: str = 'mmdet_maxq') -> Optional[str]:
    """The module under ``package`` whose import is running ``package``'s ``__init__``.

    Python imports a parent package from ``importlib``'s ``_find_and_load_unlocked(name)`` of
    the submodule asked for; that frame's ``name`` tells which. Of nested ones
    (``mmdet_maxq.deploy.semi_structured`` imports ``mmdet_maxq.deploy`` first) the outermost,
    the module asked for, is returned. None where the frames are not CPython's (then the
    caller does the full import, the safe default) or when the package itself is imported.

    Args:
        package (str): The package whose ``__init__`` asks. Defaults to ``'mmdet_maxq'``.
    """
    frame = sys._getframe(1)
    found = None
    while frame is not None:
        if frame.f_code.co_name == '_find_and_load_unlocked':
            name = frame.f_locals.get('name')
            if isinstance(name, str) and name.startswith(package + '.'):
                found = name
        frame = frame.f_back
    return found


def unimportable_openmmlab() -> Optional[str]:
    """The first of MMEngine, mmcv and MMDetection that the import system cannot find (with
    the reason), or None when all three can be imported."""
    for name in OPENMMLAB:
        try:
            if importlib.util.find_spec(name) is None:
                return f'{name} (not found)'
        except (ImportError, ValueError) as err:
            return f'{name} ({err})'
    return None


def require_openmmlab() -> None:
    """Raise one clear ImportError if the OpenMMLab stack cannot be imported."""
    missing = unimportable_openmmlab()
    if missing is not None:
        raise ImportError(
            f'mmdet-maxq: cannot import {missing}, which the package needs for its models, '
            'hooks and tools. To fix it, run `bash tools/setup_env.sh` (or `make setup`); for '
            'the mask math alone (plain PyTorch), `import mmdet_maxq.sparsity`')


def torch_only_import() -> bool:
    """Whether this import of ``mmdet_maxq`` is for a torch-only subpackage, without the
    OpenMMLab stack: then the package ``__init__`` checks and registers nothing."""
    name = requested_module()
    if name is None:
        return False
    wanted = any(name == sub or name.startswith(sub + '.') for sub in TORCH_ONLY_SUBPACKAGES)
    return wanted and unimportable_openmmlab() is not None

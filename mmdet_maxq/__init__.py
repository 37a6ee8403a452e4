"""mmdet-maxq: MaxQ N:M sparsity for MMDetection 3.x.

Importing the package (``custom_imports=dict(imports=['mmdet_maxq'])`` in a config does it)
checks the installed versions, lets MMEngine checkpoints load under
``torch.load(weights_only=True)``, and registers the model wrapper and hooks in MMDetection's
registries.
"""
from .version import __version__
from .version_check import check_versions

check_versions()

from .checkpoint.safe_load import allow_mmengine_checkpoints  # noqa: E402

allow_mmengine_checkpoints()

from . import datasets, engine, models  # noqa: E402,F401

__all__ = ['__version__']

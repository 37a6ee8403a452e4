"""Helpers shared by the sparsity hooks."""
from mmengine.model import is_model_wrapper

from mmdet_maxq.models.sparse_detector import SparseDetector


def get_sparse_detector(runner, hook_name: str) -> SparseDetector:
    """The runner's :class:`SparseDetector`, unwrapped from DDP/FSDP wrappers.

    Raises:
        TypeError: The model is not a ``SparseDetector``, naming the hook and the fix.
    """
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    if not isinstance(model, SparseDetector):
        raise TypeError(
            f'{hook_name} needs model.type="SparseDetector" (got {type(model).__name__}); wrap '
            'the detector config as model=dict(type="SparseDetector", architecture=..., '
            'sparsity=...) or remove the hook from custom_hooks')
    return model

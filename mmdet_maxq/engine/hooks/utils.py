"""Helpers shared by the sparsity hooks."""
import torch.nn as nn
from mmengine.model import is_model_wrapper

from mmdet_maxq.models.sparsify import sparsity_settings


def get_sparse_model(runner, hook_name: str) -> nn.Module:
    """The runner's sparsified model, unwrapped from DDP/FSDP wrappers.

    Raises:
        TypeError: The model was not built as a ``SparseDetector``, naming the hook and the fix.
    """
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    if sparsity_settings(model) is None:
        raise TypeError(
            f'{hook_name} needs a sparse model (got a plain {type(model).__name__}); make the '
            "detector sparse with model=dict(type='SparseDetector', detector='"
            f"{type(model).__name__}', sparsity=dict(...)) or remove the hook from custom_hooks")
    return model

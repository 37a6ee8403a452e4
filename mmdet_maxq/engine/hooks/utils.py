"""Helpers shared by the sparsity hooks."""
import torch.nn as nn
from mmengine.model import is_model_wrapper

from mmdet_maxq.models.sparsify import sparsity_settings


def get_sparse_model(runner, hook_name: str) -> nn.Module:
    """The runner's sparsified model, unwrapped from DDP/FSDP wrappers.

    Raises:
        TypeError: The model was not built as a ``SparseDetector`` / ``SparseClassifier``,
            naming the hook and the fix.
    """
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    if sparsity_settings(model) is None:
        cls = type(model)
        entry, kind = (('SparseClassifier', 'classifier') if cls.__module__.startswith('mmpretrain')
                       else ('SparseDetector', 'detector'))
        raise TypeError(
            f'{hook_name} needs a sparse model (got a plain {cls.__name__}); make the '
            f"{kind} sparse with model=dict(type='{entry}', {kind}='{cls.__name__}', "
            'sparsity=dict(...)) or remove the hook from custom_hooks')
    return model

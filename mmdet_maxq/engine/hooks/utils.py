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


def resuming(runner) -> bool:
    """Whether ``runner`` resumes a run (``resume=True``) rather than starting one or only
    loading weights (``load_from``).

    MMEngine's ``Runner`` keeps its ``resume`` argument only in the private ``_resume``; this is
    the one place that reads it (a runner without it is taken as not resuming).
    """
    return bool(getattr(runner, '_resume', False))


def starts_afresh(runner) -> bool:
    """Whether ``runner`` trains from iteration 0, neither resuming nor continuing a run."""
    return runner.iter == 0 and not resuming(runner)

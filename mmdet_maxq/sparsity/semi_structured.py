"""The 2:4 speed path: a deployed model's 2:4 weights as semi-structured sparse tensors.

A runtime form, not a checkpoint format: :func:`to_semi_structured` takes a deployed plain model
(its N:M masks folded into the weights, e.g. by ``tools/deploy.py``), already on a CUDA device
in float16 or bfloat16, and replaces in place every eligible ``nn.Linear`` weight by a
``torch.sparse`` semi-structured tensor, whose matrix products run on the GPU's sparse tensor
cores (cuSPARSELt or CUTLASS kernels, compute capability 8.0 or later). Call it last, after
``.to(device, dtype)`` and after loading weights: such a weight can be neither moved nor
saved.

A 1x1 conv is the same matrix product over channels: :func:`convs_as_linear` replaces the
plain 1x1 convs of a model (a ResNet's bottleneck ``conv1`` / ``conv3`` and downsample convs)
by :class:`Conv1x1AsLinear`, which :func:`to_semi_structured` then converts like a Linear.
Run the model in ``torch.channels_last`` so that the channel axis is the contiguous one.

The API is PyTorch's own ``torch.sparse.to_sparse_semi_structured`` backends
(``SparseSemiStructuredTensorCUSPARSELT`` / ``SparseSemiStructuredTensorCUTLASS``), not
torchao's ``sparsify_``: torchao's ``semi_sparse_weight`` wraps the same tensors for
``nn.Linear`` only, while this also covers 1x1 convs and lists why each layer was left dense,
without a new dependency. Nothing here imports OpenMMLab: ``import
mmdet_maxq.sparsity.semi_structured`` works with PyTorch alone.

Example::

    model = MODELS.build(cfg.model.backbone)          # a deployed (folded) 2:4 backbone
    model.load_state_dict(state)
    model.cuda().half().eval()
    report = to_semi_structured(model)
    print(report.summary())
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdet_maxq.sparsity import is_nm_sparse

__all__ = [
    'SHAPE_MULTIPLES', 'SemiStructuredError', 'Conv1x1AsLinear', 'is_plain_1x1',
    'convs_as_linear', 'SemiStructuredReport', 'layer_ineligibility', 'default_backend',
    'check_semi_structured_device', 'plan_semi_structured', 'to_semi_structured'
]

# Smallest (rows, cols) multiple of a float16 / bfloat16 weight per backend (the
# ``sparse_min_rows`` / ``sparse_min_cols`` of torch.sparse's ``_DTYPE_SHAPE_CONSTRAINTS``).
SHAPE_MULTIPLES = {'cusparselt': (16, 16), 'cutlass': (32, 64)}
DTYPES = (torch.float16, torch.bfloat16)
MIN_CAPABILITY = (8, 0)
FIX = ('run on a CUDA GPU of compute capability 8.0 or later (A100, H100, RTX 30xx or newer) '
       'and call it after model.cuda().half() (or .bfloat16()); on other devices keep the '
       'dense model, whose zeros give the same outputs')


class SemiStructuredError(RuntimeError):
    """The 2:4 speed path cannot run here (one line: the problem and the fix)."""


class Conv1x1AsLinear(nn.Module):
    """A plain 1x1 conv (no padding, groups 1, any stride) as a matrix product over channels.

    ``F.linear`` over the channel axis of an ``(N, C, H, W)`` input; in ``channels_last``
    memory the input's ``(N, H, W, C)`` view is contiguous and the product reads it without a
    copy (the strided view of a stride-2 conv is copied). The output is ``(N, O, H', W')`` in
    ``channels_last`` memory. ``weight`` is ``(O, C)``: the conv's weight without its 1x1
    kernel axes, so it can be made a semi-structured tensor.

    Args:
        conv (nn.Conv2d): The 1x1 conv to replace; see :func:`is_plain_1x1`.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        reason = _not_plain_1x1(conv)
        if reason is not None:
            raise ValueError(f'Conv1x1AsLinear: {reason}')
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.stride = conv.stride
        self.weight = nn.Parameter(conv.weight.detach().flatten(1).clone(),
                                   requires_grad=conv.weight.requires_grad)
        self.bias = None if conv.bias is None else nn.Parameter(
            conv.bias.detach().clone(), requires_grad=conv.bias.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sh, sw = self.stride
        if sh > 1 or sw > 1:
            x = x[:, :, ::sh, ::sw]
        n, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
        out = F.linear(rows, self.weight, self.bias)
        return out.view(n, h, w, self.out_channels).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (f'{self.in_channels}, {self.out_channels}, stride={self.stride}, '
                f'bias={self.bias is not None}')


def _not_plain_1x1(conv: nn.Module) -> Optional[str]:
    """Why ``conv`` is not a plain 1x1 ``nn.Conv2d`` (None when it is one)."""
    if not isinstance(conv, nn.Conv2d):
        return f'{type(conv).__name__} is not an nn.Conv2d'
    if type(conv).forward is not nn.Conv2d.forward and not _is_mmcv_conv(conv):
        return f'{type(conv).__name__} has its own forward'
    if tuple(conv.kernel_size) != (1, 1):
        return f'kernel {tuple(conv.kernel_size)} is not 1x1'
    if conv.groups != 1:
        return f'groups={conv.groups}'
    # A string padding of a 1x1 kernel ('valid', 'same') adds nothing.
    if not isinstance(conv.padding, str) and tuple(conv.padding) != (0, 0):
        return f'padding={tuple(conv.padding)}'
    if conv.padding_mode != 'zeros':
        return f'padding_mode={conv.padding_mode}'
    return None


def _is_mmcv_conv(conv: nn.Module) -> bool:
    """MMCV's ``Conv2d`` wrapper (an empty-input guard over ``nn.Conv2d.forward``)."""
    cls = type(conv)
    return cls.__name__ == 'Conv2d' and cls.__module__.startswith('mmcv.')


def is_plain_1x1(conv: nn.Module) -> bool:
    """Whether ``conv`` is a 1x1 ``nn.Conv2d`` that :class:`Conv1x1AsLinear` computes exactly."""
    return _not_plain_1x1(conv) is None


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


FilterFn = Callable[[str, nn.Module], bool]


def convs_as_linear(model: nn.Module, filter_fn: Optional[FilterFn] = None) -> List[str]:
    """Replace, in place, the plain 1x1 convs of ``model`` by :class:`Conv1x1AsLinear`.

    The outputs stay the same up to summation order (dense weights); the new modules' weights
    are what :func:`to_semi_structured` converts. Their weights are ``(O, C)``, so load a
    checkpoint before, not after.

    Args:
        model (nn.Module): The model (a deployed one: its weights folded).
        filter_fn (callable, optional): ``filter_fn(name, conv)``; only convs for which it
            returns True are replaced. Defaults to every plain 1x1 conv.

    Returns:
        list[str]: The names of the replaced convs.
    """
    names = [name for name, mod in model.named_modules()
             if is_plain_1x1(mod) and (filter_fn is None or filter_fn(name, mod))]
    for name in names:
        _set_submodule(model, name, Conv1x1AsLinear(model.get_submodule(name)))
    return names


@dataclass
class SemiStructuredReport:
    """What :func:`to_semi_structured` converted, and why the other candidates stayed dense."""
    backend: str
    converted: List[str] = field(default_factory=list)
    dense: Dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f'{len(self.converted)} weights semi-structured ({self.backend}), '
                 f'{len(self.dense)} left dense']
        lines += [f'  dense: {name} ({reason})' for name, reason in self.dense.items()]
        return '\n'.join(lines)


def layer_ineligibility(weight: torch.Tensor, backend: str = 'cusparselt') -> Optional[str]:
    """Why a 2-D weight cannot become a 2:4 semi-structured tensor (None when it can).

    Checks, in order: 2-D, dtype float16 / bfloat16, both dimensions multiples of the
    backend's (``SHAPE_MULTIPLES``: cuSPARSELt (16, 16), CUTLASS (32, 64)), and exactly 2:4
    along the input axis (every block of 4 consecutive weights of a row has at most 2
    non-zeros). The device is not checked here (see :func:`check_semi_structured_device`).

    Args:
        weight (torch.Tensor): The weight, ``(out_features, in_features)``.
        backend (str): ``'cusparselt'`` or ``'cutlass'``. Defaults to ``'cusparselt'``.
    """
    rows_multiple, cols_multiple = _shape_multiple(backend)
    if isinstance(weight, torch.sparse.SparseSemiStructuredTensor):
        return 'already semi-structured'
    if weight.dim() != 2:
        return f'{weight.dim()}-D weight (needs 2-D)'
    if weight.dtype not in DTYPES:
        return f'dtype {weight.dtype} (needs torch.float16 or torch.bfloat16)'
    rows, cols = weight.shape
    if rows % rows_multiple or cols % cols_multiple:
        return (f'shape ({rows}, {cols}) is not a multiple of ({rows_multiple}, '
                f'{cols_multiple}) ({backend})')
    if not is_nm_sparse(weight.detach(), 2, 4):
        return 'not exactly 2:4 (fold the masks first: tools/deploy.py)'
    return None


def _shape_multiple(backend: str) -> Tuple[int, int]:
    if backend not in SHAPE_MULTIPLES:
        raise ValueError(f'backend must be one of {sorted(SHAPE_MULTIPLES)}, got {backend!r}')
    return SHAPE_MULTIPLES[backend]


def default_backend() -> str:
    """``'cusparselt'`` where this PyTorch build has cuSPARSELt, else ``'cutlass'``."""
    cusparselt = getattr(torch.backends, 'cusparselt', None)
    return 'cusparselt' if cusparselt is not None and cusparselt.is_available() else 'cutlass'


def check_semi_structured_device(device: Optional[torch.device] = None) -> None:
    """Raise :class:`SemiStructuredError` (one line) unless ``device`` runs 2:4 kernels.

    Args:
        device (torch.device, optional): The model's device. Defaults to the current CUDA
            device.
    """
    if device is not None and torch.device(device).type != 'cuda':
        raise SemiStructuredError(
            f'2:4 semi-structured weights need a CUDA device; the model is on '
            f'{torch.device(device).type}. To fix it, {FIX}')
    if not torch.cuda.is_available():
        raise SemiStructuredError(
            f'2:4 semi-structured weights need a CUDA device; none is available '
            f'(torch {torch.__version__}). To fix it, {FIX}')
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        raise SemiStructuredError(
            f'2:4 semi-structured weights need compute capability 8.0 or later; '
            f'{torch.cuda.get_device_name(device)} has {capability[0]}.{capability[1]}. '
            f'To fix it, {FIX}')


def _candidates(model: nn.Module, filter_fn: Optional[FilterFn]):
    """``(name, module)`` of the Linear layers and :class:`Conv1x1AsLinear` of ``model``,
    with the reason to skip those whose weight is not used through their own forward."""
    skipped = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.MultiheadAttention):
            # Its forward passes out_proj.weight straight to F.multi_head_attention_forward.
            for child, sub in mod.named_children():
                if isinstance(sub, nn.Linear):
                    skipped[f'{name}.{child}' if name else child] = (
                        'weight read by nn.MultiheadAttention, not through its own forward')
    for name, mod in model.named_modules():
        if not isinstance(mod, (nn.Linear, Conv1x1AsLinear)):
            continue
        if filter_fn is not None and not filter_fn(name, mod):
            continue
        yield name, mod, skipped.get(name)


def plan_semi_structured(model: nn.Module, backend: str = 'cusparselt',
                         filter_fn: Optional[FilterFn] = None) -> SemiStructuredReport:
    """Which weights of ``model`` :func:`to_semi_structured` would convert, as it is now.

    Every check but the device's: the candidates are the ``nn.Linear`` layers (MMCV's
    ``Linear`` wrapper included) and :class:`Conv1x1AsLinear` modules; each must pass
    :func:`layer_ineligibility`, and a Linear inside an ``nn.MultiheadAttention`` stays
    dense (that module reads its weight directly). Nothing is changed.

    Args:
        model (nn.Module): The model, in the dtype it will run in.
        backend (str): ``'cusparselt'`` or ``'cutlass'``. Defaults to ``'cusparselt'``.
        filter_fn (callable, optional): ``filter_fn(name, module)``; only layers for which it
            returns True are considered. Defaults to all.

    Returns:
        SemiStructuredReport: ``converted`` lists the eligible layers, ``dense`` the others
        with the reason.
    """
    _shape_multiple(backend)
    report = SemiStructuredReport(backend=backend)
    for name, mod, reason in _candidates(model, filter_fn):
        reason = reason or layer_ineligibility(mod.weight, backend)
        if reason is None:
            report.converted.append(name)
        else:
            report.dense[name] = reason
    return report


@torch.no_grad()
def to_semi_structured(model: nn.Module, filter_fn: Optional[FilterFn] = None,
                       backend: Optional[str] = None) -> SemiStructuredReport:
    """Make every eligible 2:4 ``nn.Linear`` / :class:`Conv1x1AsLinear` weight semi-structured.

    In place. The model must already be on its CUDA device, in float16 or bfloat16, and in
    inference use (the converted weights get ``requires_grad=False``). Layers whose weight is
    not exactly 2:4, of another dtype or of a shape the backend refuses stay dense and are
    listed in the report with the reason (see :func:`plan_semi_structured`).

    Args:
        model (nn.Module): A deployed model (masks folded into the weights).
        filter_fn (callable, optional): ``filter_fn(name, module)``; only layers for which it
            returns True are considered. Defaults to all.
        backend (str, optional): ``'cusparselt'`` or ``'cutlass'``. Defaults to
            :func:`default_backend`.

    Returns:
        SemiStructuredReport: The converted layers and the candidates left dense.

    Raises:
        SemiStructuredError: No CUDA device of compute capability 8.0 or later, or the model's
            weights are not on one (one line: the problem and the fix).
    """
    params = list(model.parameters())
    check_semi_structured_device(params[0].device if params else None)
    backend = backend or default_backend()
    cls = (torch.sparse.SparseSemiStructuredTensorCUSPARSELT if backend == 'cusparselt'
           else torch.sparse.SparseSemiStructuredTensorCUTLASS)
    plan = plan_semi_structured(model, backend, filter_fn)
    report = SemiStructuredReport(backend=backend, dense=dict(plan.dense))
    for name in plan.converted:
        mod = model.get_submodule(name)
        if mod.weight.device.type != 'cuda':
            report.dense[name] = f'on {mod.weight.device.type}'
            continue
        sparse = cls.from_dense(mod.weight.detach().contiguous())
        mod.weight = nn.Parameter(sparse, requires_grad=False)
        report.converted.append(name)
    return report

"""Pick the convs of a detector to make N:M sparse and swap them, in place, for
:class:`SparseConv2d`; find and drive the sparse convs of a model afterwards."""
import fnmatch
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from mmdet_maxq.sparsity import check_nm, is_nm_eligible
from mmdet_maxq.sparsity.validation import check_tau
from .mask_refresh import refresh_convs
from .sparse_conv import SPARSE_METHODS, STE_KINDS, SparseConv2d

METHODS = SPARSE_METHODS + ('dense', )
_WILDCARDS = set('*?[')


@dataclass(frozen=True)
class SparsitySettings:
    """Validated ``model.sparsity`` settings of a ``SparseDetector`` config.

    Every way of building it (directly or by :meth:`from_cfg`) validates the values; a
    single pattern given as a string for ``layers`` / ``exclude`` is taken as a one-pattern
    list.

    Args:
        method (str): ``'maxq'``, ``'srste'`` or ``'dense'``. Defaults to ``'maxq'``.
        n (int): Weights kept per block. Defaults to 2.
        m (int): Block size. Defaults to 4.
        tau (float): MaxQ temperature, a finite number > 0. Defaults to 1e-2.
        ste (str): ``'soft'`` or ``'hard'`` straight-through estimator. Defaults to ``'soft'``.
        layers (tuple[str]): ``fnmatch`` patterns over module names of the wrapped detector.
            A pattern with wildcards takes the N:M-eligible convs it matches and leaves the
            others dense (listed in the log); a pattern without wildcards names one conv, which
            must be eligible. Defaults to ``('backbone.*',)``.
        exclude (tuple[str]): Patterns of convs to keep dense. Defaults to ``()``.
        cuda_graph (bool): Capture the per-iteration mask refresh of CUDA models once in a
            CUDA graph and replay it (one launch instead of about two hundred ops).
            Defaults to False.
    """
    method: str = 'maxq'
    n: int = 2
    m: int = 4
    tau: float = 1e-2
    ste: str = 'soft'
    layers: Tuple[str, ...] = ('backbone.*', )
    exclude: Tuple[str, ...] = field(default_factory=tuple)
    cuda_graph: bool = False

    def __post_init__(self):
        self._validate('sparsity')

    def _validate(self, key: str) -> None:
        for name in ('layers', 'exclude'):
            value = getattr(self, name)
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)) or not all(
                    isinstance(p, str) for p in value):
                raise ValueError(f'{key}.{name} must be a list of name patterns, got {value!r}')
            object.__setattr__(self, name, tuple(value))
        if self.method not in METHODS:
            raise ValueError(f'{key}.method must be one of {METHODS}, got {self.method!r}')
        if self.ste not in STE_KINDS:
            raise ValueError(f'{key}.ste must be one of {STE_KINDS}, got {self.ste!r}')
        try:
            check_nm(self.n, self.m)
        except ValueError as err:
            raise ValueError(f'{key}.n / {key}.m: {err}') from None
        try:
            check_tau(self.tau)
        except ValueError as err:
            raise ValueError(f'{key}.tau: {err}') from None
        if not isinstance(self.cuda_graph, bool):
            raise ValueError(f'{key}.cuda_graph must be True or False, got {self.cuda_graph!r}')
        if not self.layers:
            raise ValueError(f'{key}.layers is empty; give at least one pattern such as '
                             "'backbone.*'")

    @classmethod
    def from_cfg(cls, cfg: Optional[dict], key: str = 'model.sparsity') -> 'SparsitySettings':
        """Build from a config dict; every error names the offending config key."""
        cfg = dict(cfg or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f'{key}: unknown keys {unknown}; valid keys are {sorted(known)}')
        try:
            return cls(**cfg)
        except ValueError as err:
            # The checks name the keys 'sparsity.<name>'; say where they are in the config.
            raise ValueError(re.sub(r'(?<![\w.])sparsity\.', key + '.', str(err))) from None


@dataclass
class SparsifyReport:
    """What :func:`sparsify` did: the sparse convs and the matched convs left dense."""
    sparse: List[str] = field(default_factory=list)
    dense: Dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f'{len(self.sparse)} convs sparse, {len(self.dense)} matched convs left dense']
        lines += [f'  dense: {name} ({reason})' for name, reason in self.dense.items()]
        return '\n'.join(lines)


def _plain_forwards() -> tuple:
    """Forwards that are a plain conv's: ``nn.Conv2d``'s and MMCV's ``Conv2d`` wrapper's.

    The wrapper only adds an empty-input guard for torch < 1.4; with the supported torch
    versions its forward is ``nn.Conv2d.forward``, and a plain conv handles empty inputs.
    """
    from mmcv.cnn.bricks.wrappers import Conv2d as MMCVConv2d
    return (nn.Conv2d.forward, MMCVConv2d.forward)


def _is_plain_conv(module: nn.Module) -> bool:
    # Subclasses with their own forward (deformable, SAC, ...) would lose it if swapped.
    return isinstance(module, nn.Conv2d) and type(module).forward in _plain_forwards()


def select_convs(model: nn.Module, settings: SparsitySettings,
                 key: str = 'model.sparsity') -> Tuple[List[str], Dict[str, str]]:
    """Names of the convs to sparsify, and the matched convs left dense with the reason.

    Raises:
        ValueError: A pattern matches no conv, or an explicitly named conv is not eligible.
    """
    convs = {name: mod for name, mod in model.named_modules() if isinstance(mod, nn.Conv2d)}
    chosen, dense = [], {}
    for pattern in settings.layers:
        matched = [name for name in convs if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            raise ValueError(f'{key}.layers: pattern {pattern!r} matches no conv of the detector '
                             f'(e.g. {next(iter(convs), "none")!r}); fix or remove the pattern')
        explicit = not (_WILDCARDS & set(pattern))
        for name in matched:
            conv = convs[name]
            if any(fnmatch.fnmatchcase(name, ex) for ex in settings.exclude):
                dense[name] = 'excluded'
                continue
            reason = None
            if not _is_plain_conv(conv):
                reason = f'{type(conv).__name__} has its own forward'
            elif not is_nm_eligible(conv.weight, settings.m):
                reason = f'{conv.weight.shape[1]} input channels not divisible by M={settings.m}'
            if reason is not None and explicit:
                raise ValueError(f'{key}.layers: {name!r} cannot be {settings.n}:{settings.m} '
                                 f'sparse: {reason}; remove it from the list or change M')
            if reason is not None:
                dense[name] = reason
            elif name not in chosen:
                chosen.append(name)
    for ex in settings.exclude:
        if not any(fnmatch.fnmatchcase(name, ex) for name in convs):
            raise ValueError(f'{key}.exclude: pattern {ex!r} matches no conv of the detector')
    return chosen, dense


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


# The attribute that marks a sparsified model (its value: the SparsitySettings).
SETTINGS_ATTR = 'sparsity_settings'


def sparsify(model: nn.Module, settings: SparsitySettings,
             key: str = 'model.sparsity') -> SparsifyReport:
    """Replace the selected convs of ``model`` in place by :class:`SparseConv2d`.

    The model keeps its class, parameters and state-dict keys (plus one ``mask`` buffer per
    sparse conv); ``model.sparsity_settings`` records the settings. With ``method='dense'``
    the convs are selected and reported but left as they are, so the dense baseline runs
    through the same config, hooks and tools at plain-conv cost.

    A sparse model gets a forward pre-hook (:func:`refresh_before_forward`): before each
    training-mode forward it refreshes every mask at once (:func:`refresh_masks`), before an
    eval-mode forward the stale ones; the convs then use those masks for the whole forward.
    """
    chosen, dense = select_convs(model, settings, key)
    if settings.method != 'dense':
        for name in chosen:
            conv = model.get_submodule(name)
            _set_submodule(model, name, SparseConv2d.convert_from(
                conv, settings.n, settings.m, settings.method, settings.tau, settings.ste,
                layer_name=name))
        if chosen and refresh_before_forward not in model._forward_pre_hooks.values():
            model.register_forward_pre_hook(refresh_before_forward)
            model.register_forward_hook(release_after_forward, always_call=True)
    setattr(model, SETTINGS_ATTR, settings)
    return SparsifyReport(sparse=chosen, dense=dense)


def refresh_before_forward(model: nn.Module, args) -> None:
    """Forward pre-hook of a sparsified model: its masks, once, for the forward to come.

    In training mode every sparse conv's mask is recomputed from the current weights (frozen
    convs included, so weights swapped in through ``.data`` are always followed); in eval mode
    only the stale ones (eval switch, load, rate change). The convs then hold their masks
    until :func:`release_after_forward`.
    """
    convs = [conv for _, conv in sparse_convs(model)]
    if model.training:
        stale = convs
    else:
        stale = [conv for conv in convs if not conv._mask_is_current()]
    if stale:
        settings = sparsity_settings(model)
        refresh_convs(model, stale, cuda_graph=bool(settings and settings.cuda_graph))
    for conv in convs:
        conv.mask_held = True


def release_after_forward(model: nn.Module, args, output) -> None:
    """Forward hook of a sparsified model: its convs go back to computing their own masks."""
    for _, conv in sparse_convs(model):
        conv.mask_held = False


def sparse_convs(model: nn.Module) -> List[Tuple[str, SparseConv2d]]:
    """``(name, module)`` of every :class:`SparseConv2d` in ``model``."""
    return [(name, mod) for name, mod in model.named_modules() if isinstance(mod, SparseConv2d)]


def sparsity_settings(model: nn.Module) -> Optional[SparsitySettings]:
    """The settings ``model`` (or the first of its submodules) was sparsified with, or None.

    A semi-supervised wrapper (teacher and student) finds them on its detectors.
    """
    for module in model.modules():
        settings = getattr(module, SETTINGS_ATTR, None)
        if isinstance(settings, SparsitySettings):
            return settings
    return None


def set_preserve_rate(model: nn.Module, preserve: float) -> None:
    """Set the incremental-sparsity preserve rate of every sparse conv of ``model``.

    The masks follow at the next forward (see :class:`SparseConv2d`).
    """
    for _, conv in sparse_convs(model):
        conv.set_preserve(preserve)


@torch.no_grad()
def refresh_masks(model: nn.Module, preserve: Optional[float] = None) -> None:
    """Recompute every mask of ``model`` from its current weights now, in one batch.

    The sparse convs are grouped by N:M, method, tau, device and dtype; each group's masks
    are one packed computation (see :mod:`mmdet_maxq.models.mask_refresh`), replayed from a
    CUDA graph when the model was sparsified with ``cuda_graph=True``.

    Args:
        model (nn.Module): A model with sparse convs.
        preserve (float, optional): Set this preserve rate on every sparse conv first.
            Defaults to the rates they have.
    """
    convs = [conv for _, conv in sparse_convs(model)]
    if preserve is not None:
        for conv in convs:
            conv.set_preserve(preserve)
    settings = sparsity_settings(model)
    refresh_convs(model, convs, cuda_graph=bool(settings and settings.cuda_graph))

"""Pick the convs of a detector to make N:M sparse and swap them, in place, for
:class:`SparseConv2d`; find and drive the sparse convs of a model afterwards."""
import fnmatch
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from mmdet_maxq.sparsity import check_nm, is_nm_eligible
from .sparse_conv import SPARSE_METHODS, STE_KINDS, SparseConv2d

METHODS = SPARSE_METHODS + ('dense', )
_WILDCARDS = set('*?[')


@dataclass(frozen=True)
class SparsitySettings:
    """Validated ``model.sparsity`` settings of a ``SparseDetector`` config.

    Args:
        method (str): ``'maxq'``, ``'srste'`` or ``'dense'``. Defaults to ``'maxq'``.
        n (int): Weights kept per block. Defaults to 2.
        m (int): Block size. Defaults to 4.
        tau (float): MaxQ temperature. Defaults to 1e-2.
        ste (str): ``'soft'`` or ``'hard'`` straight-through estimator. Defaults to ``'soft'``.
        layers (tuple[str]): ``fnmatch`` patterns over module names of the wrapped detector.
            A pattern with wildcards takes the N:M-eligible convs it matches and leaves the
            others dense (listed in the log); a pattern without wildcards names one conv, which
            must be eligible. Defaults to ``('backbone.*',)``.
        exclude (tuple[str]): Patterns of convs to keep dense. Defaults to ``()``.
    """
    method: str = 'maxq'
    n: int = 2
    m: int = 4
    tau: float = 1e-2
    ste: str = 'soft'
    layers: Tuple[str, ...] = ('backbone.*', )
    exclude: Tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_cfg(cls, cfg: Optional[dict], key: str = 'model.sparsity') -> 'SparsitySettings':
        """Build from a config dict; every error names the offending config key."""
        cfg = dict(cfg or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f'{key}: unknown keys {unknown}; valid keys are {sorted(known)}')
        for name in ('layers', 'exclude'):
            if name in cfg:
                value = cfg[name]
                if isinstance(value, str):
                    value = [value]
                if not all(isinstance(p, str) for p in value):
                    raise ValueError(f'{key}.{name} must be a list of name patterns, got {value!r}')
                cfg[name] = tuple(value)
        settings = cls(**cfg)
        if settings.method not in METHODS:
            raise ValueError(f'{key}.method must be one of {METHODS}, got {settings.method!r}')
        if settings.ste not in STE_KINDS:
            raise ValueError(f'{key}.ste must be one of {STE_KINDS}, got {settings.ste!r}')
        try:
            check_nm(settings.n, settings.m)
        except ValueError as err:
            raise ValueError(f'{key}.n / {key}.m: {err}') from None
        if not isinstance(settings.tau, (int, float)) or not settings.tau > 0:
            raise ValueError(f'{key}.tau must be a positive number, got {settings.tau!r}')
        if not settings.layers:
            raise ValueError(f'{key}.layers is empty; give at least one pattern such as '
                             "'backbone.*'")
        return settings


@dataclass
class SparsifyReport:
    """What :func:`sparsify` did: the sparse convs and the matched convs left dense."""
    sparse: List[str] = field(default_factory=list)
    dense: Dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f'{len(self.sparse)} convs sparse, {len(self.dense)} matched convs left dense']
        lines += [f'  dense: {name} ({reason})' for name, reason in self.dense.items()]
        return '\n'.join(lines)


def _is_plain_conv(module: nn.Module) -> bool:
    # Subclasses with their own forward (deformable, SAC, ...) would lose it if swapped.
    return isinstance(module, nn.Conv2d) and type(module).forward is nn.Conv2d.forward


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
    """
    chosen, dense = select_convs(model, settings, key)
    if settings.method != 'dense':
        for name in chosen:
            conv = model.get_submodule(name)
            _set_submodule(model, name, SparseConv2d.convert_from(
                conv, settings.n, settings.m, settings.method, settings.tau, settings.ste,
                layer_name=name))
    setattr(model, SETTINGS_ATTR, settings)
    return SparsifyReport(sparse=chosen, dense=dense)


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
    """Recompute every mask of ``model`` from its current weights now (optionally at a rate)."""
    for _, conv in sparse_convs(model):
        conv.update_mask(preserve)

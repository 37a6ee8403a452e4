"""Pick the convs and linear layers of a model to make N:M sparse and swap them, in place, for
:class:`SparseConv2d` / :class:`SparseLinear`; find and drive the sparse layers afterwards."""
import fnmatch
import logging
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log

from mmdet_maxq.sparsity import check_nm, is_nm_eligible
from mmdet_maxq.sparsity.validation import check_tau
from .mask_refresh import refresh_layers
from .sparse_conv import SparseConv2d
from .sparse_layer import SPARSE_METHODS, STE_KINDS, SparseLayerMixin
from .sparse_linear import SparseLinear

METHODS = SPARSE_METHODS + ('dense', )
# ``sparsity.layer_types`` -> (plain type, sparse type, what the log calls it).
LAYER_TYPES = {'conv': (nn.Conv2d, SparseConv2d, 'convs'),
               'linear': (nn.Linear, SparseLinear, 'linear layers')}
_WILDCARDS = set('*?[')


@dataclass(frozen=True)
class SparsitySettings:
    """Validated ``model.sparsity`` settings of a ``SparseDetector`` / ``SparseClassifier``.

    Every way of building it (directly or by :meth:`from_cfg`) validates the values; a
    single pattern given as a string for ``layers`` / ``exclude`` is taken as a one-pattern
    list.

    Args:
        method (str): ``'maxq'``, ``'srste'`` or ``'dense'``. Defaults to ``'maxq'``.
        n (int): Weights kept per block. Defaults to 2.
        m (int): Block size. Defaults to 4.
        tau (float): MaxQ temperature, a finite number > 0. Defaults to 1e-2.
        ste (str): ``'soft'`` or ``'hard'`` straight-through estimator. Defaults to ``'soft'``.
        layers (tuple[str]): ``fnmatch`` patterns over module names of the model. A pattern
            with wildcards takes the N:M-eligible layers it matches and leaves the others
            dense (listed in the log); a pattern without wildcards names one layer, which must
            be eligible. A pattern under which no layer becomes sparse is refused.
            Defaults to ``('backbone.*',)``.
        exclude (tuple[str]): Patterns of layers to keep dense. Defaults to ``()``.
        layer_types (tuple[str]): Which layers the patterns select: ``'conv'``
            (``nn.Conv2d``), ``'linear'`` (``nn.Linear``) or both. Defaults to both.
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
    layer_types: Tuple[str, ...] = ('conv', 'linear')
    cuda_graph: bool = False

    def __post_init__(self):
        self._validate('sparsity')

    def _validate(self, key: str) -> None:
        for name in ('layers', 'exclude', 'layer_types'):
            value = getattr(self, name)
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)) or not all(
                    isinstance(p, str) for p in value):
                what = 'layer types' if name == 'layer_types' else 'name patterns'
                raise ValueError(f'{key}.{name} must be a list of {what}, got {value!r}')
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
        bad = [t for t in self.layer_types if t not in LAYER_TYPES]
        if bad or not self.layer_types:
            raise ValueError(f'{key}.layer_types must be a non-empty list of '
                             f'{sorted(LAYER_TYPES)}, got {list(self.layer_types)!r}')
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
    """What :func:`sparsify` did: the sparse layers and the matched layers left dense."""
    sparse: List[str] = field(default_factory=list)
    dense: Dict[str, str] = field(default_factory=dict)
    kinds: Dict[str, str] = field(default_factory=dict)  # layer name -> 'conv' / 'linear'

    def summary(self) -> str:
        counts = [f'{sum(self.kinds.get(name) == kind for name in self.sparse)} {label} sparse'
                  for kind, (_, _, label) in LAYER_TYPES.items()
                  if kind == 'conv' or kind in self.kinds.values()]
        left = 'convs' if 'linear' not in self.kinds.values() else 'layers'
        lines = [', '.join(counts) + f', {len(self.dense)} matched {left} left dense']
        lines += [f'  dense: {name} ({reason})' for name, reason in self.dense.items()]
        return '\n'.join(lines)


def _plain_forwards() -> tuple:
    """Forwards that are a plain conv's or linear layer's: torch's and MMCV's wrappers'.

    MMCV's ``Conv2d`` / ``Linear`` wrappers only add an empty-input guard for torch < 1.6;
    with the supported torch versions a plain layer handles empty inputs itself.
    """
    from mmcv.cnn.bricks.wrappers import Conv2d as MMCVConv2d
    from mmcv.cnn.bricks.wrappers import Linear as MMCVLinear
    return (nn.Conv2d.forward, MMCVConv2d.forward, nn.Linear.forward, MMCVLinear.forward)


def _weights_read_elsewhere(model: nn.Module) -> Dict[str, str]:
    """Layers whose weight another module reads without calling them, with the reason.

    ``nn.MultiheadAttention`` passes ``out_proj.weight`` (and its own ``in_proj_weight``)
    straight to ``F.multi_head_attention_forward``: a sparse ``out_proj`` would never be
    called, so it is left dense (and refused when named explicitly).
    """
    return {f'{name}.out_proj' if name else 'out_proj':
            'its weight is read by nn.MultiheadAttention.forward without calling it'
            for name, mod in model.named_modules() if isinstance(mod, nn.MultiheadAttention)}


def layer_kind(module: nn.Module, kinds: Tuple[str, ...] = tuple(LAYER_TYPES)) -> Optional[str]:
    """The key of :data:`LAYER_TYPES` (``'conv'``, ``'linear'``) of a plain or sparse layer
    among ``kinds`` (default: all), or None."""
    for kind in kinds:
        if isinstance(module, LAYER_TYPES[kind][0]):
            return kind
    return None


def _what(settings: SparsitySettings) -> str:
    return ' or '.join(LAYER_TYPES[kind][2][:-1] for kind in settings.layer_types)


def select_layers(model: nn.Module, settings: SparsitySettings,
                  key: str = 'model.sparsity') -> Tuple[List[str], Dict[str, str]]:
    """Names of the layers to sparsify, and the matched layers left dense with the reason.

    Raises:
        ValueError: A pattern matches no layer or makes none sparse, or an explicitly named
            layer is not eligible.
    """
    candidates = {name: mod for name, mod in model.named_modules()
                  if layer_kind(mod, settings.layer_types) is not None}
    owner = type(model).__name__
    read_elsewhere = _weights_read_elsewhere(model)
    plain = _plain_forwards()
    chosen, dense, idle = [], {}, []
    for pattern in settings.layers:
        matched = [name for name in candidates if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            raise ValueError(f'{key}.layers: pattern {pattern!r} matches no {_what(settings)} '
                             f'of the {owner} (e.g. {next(iter(candidates), "none")!r}); fix '
                             'or remove the pattern')
        explicit = not (_WILDCARDS & set(pattern))
        made_sparse = False
        for name in matched:
            layer = candidates[name]
            if any(fnmatch.fnmatchcase(name, ex) for ex in settings.exclude):
                dense[name] = 'excluded'
                continue
            reason = read_elsewhere.get(name)
            if reason is None and type(layer).forward not in plain:
                reason = f'{type(layer).__name__} has its own forward'
            elif reason is None and not is_nm_eligible(layer.weight, settings.m):
                unit = 'input channels' if isinstance(layer, nn.Conv2d) else 'input features'
                reason = f'{layer.weight.shape[1]} {unit} not divisible by M={settings.m}'
            if reason is not None and explicit:
                raise ValueError(f'{key}.layers: {name!r} cannot be {settings.n}:{settings.m} '
                                 f'sparse: {reason}; remove it from the list or change M')
            if reason is not None:
                dense[name] = reason
                continue
            made_sparse = True
            if name not in chosen:
                chosen.append(name)
        if not made_sparse:
            idle.append(f'{pattern!r} (' + '; '.join(
                f'{name}: {dense[name]}' for name in matched[:3]) +
                (f'; ... {len(matched) - 3} more' if len(matched) > 3 else '') + ')')
    if idle:
        raise ValueError(
            f'{key}.layers: no layer becomes {settings.n}:{settings.m} sparse under '
            + ', '.join(idle) + f'; every {_what(settings)} they match stays dense. Point the '
            f'patterns at eligible layers, change M, or set {key}.layer_types')
    for ex in settings.exclude:
        if not any(fnmatch.fnmatchcase(name, ex) for name in candidates):
            raise ValueError(f'{key}.exclude: pattern {ex!r} matches no {_what(settings)} '
                             f'of the {owner}')
    return chosen, dense


# The attribute that marks a sparsified model (its value: the SparsitySettings).
SETTINGS_ATTR = 'sparsity_settings'


def sparsify(model: nn.Module, settings: SparsitySettings,
             key: str = 'model.sparsity') -> SparsifyReport:
    """Replace the selected layers of ``model`` in place by their sparse types.

    Convs become :class:`SparseConv2d`, linear layers :class:`SparseLinear`. The model keeps
    its class, parameters and state-dict keys; ``model.sparsity_settings`` records the
    settings. With ``method='dense'`` the layers are selected and reported but left as they
    are, so the dense baseline runs through the same config, hooks and tools at plain cost.

    A sparse model gets a forward pre-hook (:func:`refresh_before_forward`): before each
    training-mode forward it refreshes every mask at once (:func:`refresh_masks`), before an
    eval-mode forward the stale ones; the layers then use those masks for the whole forward
    and its backward.
    """
    chosen, dense = select_layers(model, settings, key)
    kinds = {name: layer_kind(model.get_submodule(name), settings.layer_types)
             for name in chosen}
    if settings.method != 'dense':
        for name in chosen:
            sparse_type = LAYER_TYPES[kinds[name]][1]
            set_submodule(model, name, sparse_type.convert_from(
                model.get_submodule(name), settings.n, settings.m, settings.method,
                settings.tau, settings.ste, layer_name=name))
        if chosen and refresh_before_forward not in model._forward_pre_hooks.values():
            model.register_forward_pre_hook(refresh_before_forward)
            model.register_forward_hook(release_after_forward, always_call=True)
    setattr(model, SETTINGS_ATTR, settings)
    return SparsifyReport(sparse=chosen, dense=dense, kinds=kinds)


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule called ``name`` (dotted) of ``model`` by ``module``."""
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


# Set on a sparsified model once its first training forward has been checked for sparse
# layers that were never called (see :func:`release_after_forward`).
_CALLS_CHECKED = '_maxq_layer_calls_checked'


def refresh_before_forward(model: nn.Module, args) -> None:
    """Forward pre-hook of a sparsified model: its masks, once, for the forward to come.

    In training mode every sparse layer's mask is recomputed from the current weights (frozen
    layers included, so weights swapped in through ``.data`` are always followed); in eval
    mode only the stale ones (eval switch, load, rate change). The layers then hold their
    masks (see :meth:`SparseLayerMixin.hold_mask`).
    """
    layers = [layer for _, layer in sparse_layers(model)]
    if model.training:
        stale = layers
    else:
        stale = [layer for layer in layers if not layer.mask_is_current()]
    if stale:
        settings = sparsity_settings(model)
        refresh_layers(model, stale, cuda_graph=bool(settings and settings.cuda_graph))
    check_calls = model.training and not model.__dict__.get(_CALLS_CHECKED, False)
    for layer in layers:
        layer.hold_mask()
        if check_calls:
            layer.mask_used = False


def release_after_forward(model: nn.Module, args, output) -> None:
    """Forward hook of a sparsified model: layers that will not be differentiated release
    their masks (the others keep them until their gradient is accumulated).

    After the first training forward, sparse layers that were not called are named in a
    warning: a module that reads a layer's weight without calling it computes with the dense
    weight there.
    """
    keep = model.training and torch.is_grad_enabled()
    layers = sparse_layers(model)
    for _, layer in layers:
        if not (keep and layer.weight.requires_grad):
            layer.release_mask()
    if model.training and not model.__dict__.get(_CALLS_CHECKED, False):
        model.__dict__[_CALLS_CHECKED] = True
        unused = [name for name, layer in layers if not layer.mask_used]
        if unused:
            print_log(f'{len(unused)} sparse layers were not called in the first training '
                      f'forward: {", ".join(unused[:5])}{" ..." if len(unused) > 5 else ""}. '
                      'If a module reads their weight without calling them, it computes with '
                      'the dense weight there; leave such layers out of sparsity.layers.',
                      logger='current', level=logging.WARNING)


def sparse_layers(model: nn.Module) -> List[Tuple[str, SparseLayerMixin]]:
    """``(name, module)`` of every sparse layer (conv or linear) in ``model``."""
    return [(name, mod) for name, mod in model.named_modules()
            if isinstance(mod, SparseLayerMixin)]


def sparsity_settings(model: nn.Module) -> Optional[SparsitySettings]:
    """The settings ``model`` (or the first of its submodules) was sparsified with, or None.

    A semi-supervised wrapper (teacher and student) finds them on its detectors.
    """
    for module in model.modules():
        settings = getattr(module, SETTINGS_ATTR, None)
        if isinstance(settings, SparsitySettings):
            return settings
    return None


def sparsity_meta(model: nn.Module) -> Dict:
    """What a loader needs to recompute the masks of ``model``'s checkpoint from its weights.

    Checkpoints hold no masks (they follow from the weights); the hooks put this under
    ``meta['sparsity']`` (see :func:`mmdet_maxq.checkpoint.checkpoint_masks`). Only strings,
    numbers, lists and dicts, so ``torch.load(weights_only=True)`` reads it.

    Returns:
        dict: ``method``, ``n``, ``m``, ``tau``, ``ste`` and ``layers`` (the sparse layers'
        module names), or an empty dict for a model that was not sparsified.
    """
    settings = sparsity_settings(model)
    if settings is None:
        return {}
    return dict(method=settings.method, n=settings.n, m=settings.m, tau=settings.tau,
                ste=settings.ste, layers=[name for name, _ in sparse_layers(model)])


def set_preserve_rate(model: nn.Module, preserve: float) -> None:
    """Set the incremental-sparsity preserve rate of every sparse layer of ``model``.

    The masks follow at the next forward (see :class:`SparseLayerMixin`).
    """
    for _, layer in sparse_layers(model):
        layer.set_preserve(preserve)


@torch.no_grad()
def refresh_masks(model: nn.Module, preserve: Optional[float] = None) -> None:
    """Recompute every mask of ``model`` from its current weights now, in one batch.

    See :mod:`mmdet_maxq.models.mask_refresh`: the sparse layers are grouped by N:M, method,
    tau, device and dtype, and each group's masks are one packed computation, replayed from
    a CUDA graph when the model was sparsified with ``cuda_graph=True``.

    Args:
        model (nn.Module): A model with sparse layers.
        preserve (float, optional): Set this preserve rate on every sparse layer first.
            Defaults to the rates they have.
    """
    layers = [layer for _, layer in sparse_layers(model)]
    if preserve is not None:
        for layer in layers:
            layer.set_preserve(preserve)
    settings = sparsity_settings(model)
    refresh_layers(model, layers, cuda_graph=bool(settings and settings.cuda_graph))

"""The N:M (MaxQ or SR-STE) weight mask of a layer: one mixin for every sparse layer type.

:class:`SparseLayerMixin` holds the algorithm (mask state, refresh, straight-through
estimator, checkpoint loading, fold); each sparse layer type is a thin subclass of the plain
module that adds how it is built from the plain one and how it computes with ``W * S``:
:class:`~mmdet_maxq.models.SparseConv2d` (``nn.Conv2d``) and
:class:`~mmdet_maxq.models.SparseLinear` (``nn.Linear``, a weight ``(O, C)`` being the 1x1
conv ``(O, C, 1, 1)`` of the mask math).
"""
import weakref
from typing import Optional, Tuple

import torch
import torch.nn as nn

from mmdet_maxq.sparsity import check_nm, is_nm_eligible, is_nm_sparse, maxq_mask, nm_mask
from mmdet_maxq.sparsity.ste import apply_mask
from mmdet_maxq.sparsity.validation import check_preserve, check_tau

SPARSE_METHODS = ('maxq', 'srste')
STE_KINDS = ('soft', 'hard')

# Forward hook dicts of nn.Module that a converted layer takes over from the plain one.
_HOOK_DICTS = ('_forward_hooks', '_forward_hooks_with_kwargs', '_forward_hooks_always_called',
               '_forward_pre_hooks', '_forward_pre_hooks_with_kwargs')


class _ReleaseHook:
    """The gradient hook that ends a layer's mask hold, and the weight it is on.

    Deep copies (EMA models) and pickles as None: a copy's weight is another tensor, which
    gets its own hook at its first hold.
    """

    def __init__(self, weight: torch.Tensor, handle):
        self.weight = weakref.ref(weight)
        self.handle = handle

    def __deepcopy__(self, memo):
        return None

    def __reduce__(self):
        return (type(None), ())


class SparseLayerMixin:
    """A layer whose forward uses ``W * S``, ``S`` an N:M mask recomputed from ``W``.

    ``method='maxq'`` uses the soft multi-axis MaxQ mask (values 0 or in [1, 3]);
    ``method='srste'`` the hard 0/1 N:M mask. Both honour the incremental-sparsity preserve
    rate ``preserve`` (set by :class:`SparsityScheduleHook`).

    When the mask is computed (see "When masks are computed" in ``docs/design.md``):

    - in a sparsified model (:func:`~mmdet_maxq.models.sparsify`), a forward pre-hook on the
      model computes the masks of all its sparse layers at once before every training-mode
      forward (:func:`~mmdet_maxq.models.refresh_masks`), from the weights then in place, as
      the paper's training loop does. Every call of a layer until its weight's gradient has
      been accumulated uses that mask: heads shared over FPN levels, and the forward that
      gradient checkpointing (``with_cp=True``) recomputes during the backward. Each refresh
      binds a new mask tensor, so a forward whose backward has not run yet (two training
      forwards before one backward) keeps the mask it used. Nothing is cached on the
      weight's identity or version counter, so fused optimizers, ``.data`` writes (EMA
      swaps, mean-teacher updates) and DDP all see masks of the weights they compute with;
    - a layer used on its own (no sparsified model around it) in training mode computes its
      mask at every call of a trainable weight;
    - a frozen weight (``requires_grad=False``, e.g. MMDetection's ``frozen_stages``) called
      on its own is recomputed only when the preserve rate changed or the mask is stale;
    - switching to eval mode (``model.eval()``, which MMEngine's val/test loops call after
      the EMA hook has swapped in its weights) and loading a state dict mark the mask stale;
      the next forward recomputes it from the weights then in place, and later eval forwards
      reuse it.

    The mask is a non-persistent buffer: it follows ``.to()`` / ``.half()`` but checkpoints
    do not carry it (it is a function of the weights). Older checkpoints that do carry a
    ``mask`` entry load; the entry is ignored.

    A subclass is the plain module's type with this mixin first, and defines
    :meth:`_constructor_args` (how the plain module is built), ``_plain_type`` and
    ``_layer_kind``; its forward computes with :meth:`effective_weight`.

    Args:
        *args: The plain module's arguments.
        n (int): Weights kept in each block of ``m``. Defaults to 2.
        m (int): Block size along the input channels (features). Defaults to 4.
        method (str): ``'maxq'`` or ``'srste'``. Defaults to ``'maxq'``.
        tau (float): Temperature of the MaxQ soft axis query. Defaults to 1e-2.
        ste (str): ``'soft'`` passes the gradient of ``W * S`` to ``W`` unmasked, ``'hard'``
            multiplies it by ``S``. Defaults to ``'soft'``.
        layer_name (str): Name used in error messages (the module name in the model, e.g.
            ``backbone.layer3.1.conv2``). Defaults to ``'weight'``.
        **kwargs: More keyword arguments of the plain module.
    """

    _plain_type: type = nn.Module
    _layer_kind: str = 'layer'  # what the errors call it: 'conv', 'linear layer'

    # ------------------------------------------------------------ construction ---
    def __init__(self, *args, n: int = 2, m: int = 4, method: str = 'maxq', tau: float = 1e-2,
                 ste: str = 'soft', layer_name: str = 'weight', **kwargs):
        super().__init__(*args, **kwargs)
        check_nm(n, m)
        if method not in SPARSE_METHODS:
            raise ValueError(f'method must be one of {SPARSE_METHODS}, got {method!r}')
        if ste not in STE_KINDS:
            raise ValueError(f'ste must be one of {STE_KINDS}, got {ste!r}')
        check_tau(tau)
        if not is_nm_eligible(self.weight, m):
            raise ValueError(
                f'{layer_name}: a {self._layer_kind} with {self.weight.shape[1]} input '
                f'{self._input_unit()} cannot be {n}:{m} sparse: M={m} must divide that '
                f'count; leave this layer dense or pick an M that divides '
                f'{self.weight.shape[1]}')
        self.n, self.m, self.method, self.tau, self.ste = n, m, method, float(tau), ste
        self.layer_name = layer_name
        self.preserve = 0.0
        # True while ``mask`` may not describe the current weights (fresh, loaded, eval switch).
        self.mask_stale = True
        # The preserve rate ``mask`` was computed at.
        self._mask_preserve: Optional[float] = None
        # True from a sparsified model's refresh until this weight's gradient is accumulated
        # (or the model's next forward): calls in between use ``mask`` as it is.
        self.mask_held = False
        self._release_hook: Optional[_ReleaseHook] = None
        self.mask_used = False  # set by every call (the first training forward is checked)
        self.register_buffer('mask', torch.ones_like(self.weight, requires_grad=False),
                             persistent=False)

    @classmethod
    def _constructor_args(cls, module: nn.Module) -> Tuple[tuple, dict]:
        """``(args, kwargs)`` of the plain constructor that rebuilds ``module``'s shape."""
        raise NotImplementedError

    def _input_unit(self) -> str:
        return 'features'

    @classmethod
    def convert_from(cls, module: nn.Module, n: int, m: int, method: str = 'maxq',
                     tau: float = 1e-2, ste: str = 'soft', layer_name: str = 'weight'):
        """Wrap ``module``: the same parameter objects, device, dtype, training mode and hooks.

        The sparse layer is built by the normal constructor (on the ``meta`` device, so
        nothing is allocated twice) and then given ``module``'s own parameters; its forward
        hooks and pre-hooks are carried over. ``module`` itself is left untouched.

        Args:
            module (nn.Module): A plain module of the class's plain type (or a subclass
                whose forward is the plain one, such as MMCV's wrappers).
            n, m, method, tau, ste, layer_name: As in the class.
        """
        if not isinstance(module, cls._plain_type):
            raise TypeError(f'{cls.__name__}.convert_from expects an '
                            f'{cls._plain_type.__name__}, got {type(module).__name__}')
        args, kwargs = cls._constructor_args(module)
        new = cls(*args, **kwargs, n=n, m=m, method=method, tau=tau, ste=ste,
                  layer_name=layer_name, device='meta', dtype=module.weight.dtype)
        new.weight = module.weight
        new.bias = module.bias
        new.mask = torch.ones_like(module.weight, requires_grad=False)
        new.train(module.training)
        new.mask_stale = True
        for name in _HOOK_DICTS:
            if hasattr(module, name):
                getattr(new, name).update(getattr(module, name))
        return new

    @torch.no_grad()
    def to_dense(self) -> nn.Module:
        """The plain module with weight ``W * S``, ``S`` the mask at preserve rate 0.

        Always at rate 0 (every block N:M), whatever rate the layer is at: the result is the
        exact N:M deploy weight. ``self`` is left unchanged.
        """
        args, kwargs = self._constructor_args(self)
        plain = self._plain_type(*args, **kwargs, device='meta')
        folded = self.weight.detach() * self.compute_mask(0.0)
        plain.weight = nn.Parameter(folded, requires_grad=self.weight.requires_grad)
        if self.bias is not None:
            plain.bias = nn.Parameter(self.bias.detach().clone(),
                                      requires_grad=self.bias.requires_grad)
        plain.train(self.training)
        return plain

    # ------------------------------------------------------------ the mask ---
    def compute_mask(self, preserve: float = 0.0) -> torch.Tensor:
        """The mask of the current weight at ``preserve`` (a new tensor; ``mask`` unchanged)."""
        weight = self.weight.detach()
        if self.method == 'maxq':
            return maxq_mask(weight, self.n, self.m, preserve=preserve, tau=self.tau,
                             name=self.layer_name)
        return nm_mask(weight, self.n, self.m, preserve=preserve, name=self.layer_name)

    @torch.no_grad()
    def update_mask(self, preserve: Optional[float] = None) -> torch.Tensor:
        """Recompute ``mask`` from the current weight (no host-device synchronisation).

        Args:
            preserve (float, optional): Share of blocks exempt from N:M (incremental
                sparsity). Defaults to the rate last set.

        Returns:
            Tensor: The new mask (bound to ``mask``; the previous tensor is not written, so
            a forward that saved it for its backward keeps it).
        """
        if preserve is not None:
            self.set_preserve(preserve)
        self.mask = self.compute_mask(self.preserve)
        self.mark_mask_current()
        return self.mask

    def mark_mask_current(self) -> None:
        """Record that ``mask`` was just computed from the current weight at ``preserve``."""
        self.mask_stale = False
        self._mask_preserve = self.preserve

    def set_preserve(self, preserve: float) -> None:
        """Set the preserve rate; the mask follows at the next forward."""
        check_preserve(preserve)
        self.preserve = float(preserve)

    def hold_mask(self) -> None:
        """Use ``mask`` as it is until this weight's gradient is accumulated.

        Called by a sparsified model's refresh. A trainable weight gets a hook (registered
        once per weight object) that ends the hold when the backward has accumulated its
        gradient, i.e. after every forward it took part in (recomputed ones included) has
        been differentiated; the weight changes only after that.
        """
        self.mask_held = True
        weight = self.weight
        if not weight.requires_grad:
            return
        if self._release_hook is not None:
            if self._release_hook.weight() is weight:
                return
            self._release_hook.handle.remove()
        layer = weakref.ref(self)

        def release(_):
            owner = layer()
            if owner is not None:
                owner.mask_held = False

        self._release_hook = _ReleaseHook(
            weight, weight.register_post_accumulate_grad_hook(release))

    def release_mask(self) -> None:
        """Go back to recomputing the mask on the layer's own (see the class docstring)."""
        self.mask_held = False

    def mask_is_current(self) -> bool:
        """Whether ``mask`` can be used as it is for the next call."""
        if self.mask_stale or self._mask_preserve != self.preserve:
            return False
        if self.mask_held:  # refreshed by the sparsified model for this step
            return True
        # A trainable weight changes at every step: recompute in every training forward.
        return not (self.training and self.weight.requires_grad)

    def effective_weight(self) -> torch.Tensor:
        """``W * S``, the weight the layer computes with (differentiable w.r.t. ``W``).

        Recomputes the mask first when it may not describe the current weight (see the
        class docstring).
        """
        if not self.mask_is_current():
            self.update_mask()
        self.mask_used = True
        mask = self.mask
        if not torch.is_grad_enabled() or not self.weight.requires_grad:
            return self.weight * mask
        return apply_mask(self.weight, mask, hard=self.ste == 'hard')

    # ------------------------------------------------------------ nn.Module hooks ---
    def train(self, mode: bool = True):
        if not mode:
            # The weights evaluated may have been swapped in through ``.data`` (EMA).
            self.mask_stale = True
        return super().train(mode)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        weight = state_dict.get(prefix + 'weight')
        if self.method == 'maxq' and isinstance(weight, torch.Tensor):
            self._refuse_folded(weight)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        # Checkpoints of earlier versions carry the mask; it follows from the weights.
        if prefix + 'mask' in unexpected_keys:
            unexpected_keys.remove(prefix + 'mask')
        self.mask_stale = True

    def _refuse_folded(self, weight: torch.Tensor) -> None:
        """Refuse an exactly N:M weight: MaxQ would apply its multipliers a second time."""
        if self.n == self.m or weight.shape != self.weight.shape or \
                not weight.is_floating_point():
            return  # N = M keeps everything; a size mismatch is nn.Module's to report
        if is_nm_sparse(weight, self.n, self.m) and bool(weight.any()):
            raise ValueError(
                f'{self.layer_name}: the loaded weight is already exactly {self.n}:{self.m} '
                'sparse, i.e. folded (W * S). MaxQ recomputes S from the weight and would apply '
                'the soft multipliers a second time (about 3x instead of 2.2x on kept '
                'weights). Import the sparse ImageNet checkpoint raw (tools/convert_checkpoint.py '
                '--method maxq, the default), or fine-tune a folded checkpoint with an srste '
                "config (sparsity.method='srste')")

    def extra_repr(self) -> str:
        return (super().extra_repr() + f', nm={self.n}:{self.m}, method={self.method}, '
                f'ste={self.ste}, tau={self.tau}')

"""Argument checks shared by the sparsity functions: one clear ``ValueError`` per problem."""
import math
import numbers
from typing import Sequence, Union

import torch

__all__ = ['check_nm', 'is_nm_eligible', 'check_weight', 'check_finite', 'check_preserve',
           'check_tau', 'check_decay', 'check_mask_like']


def check_nm(n: int, m: int) -> None:
    """Raise ``ValueError`` unless ``n`` and ``m`` are integers with ``1 <= n <= m``.

    Args:
        n (int): Weights kept per block.
        m (int): Block size.
    """
    for name, value in (('n', n), ('m', m)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f'{name} must be an integer, got {value!r} '
                             f'({type(value).__name__}); e.g. n=2, m=4 for 2:4 sparsity')
    if m < 1:
        raise ValueError(f'm must be >= 1 (the block size), got m={m}; e.g. m=4 or m=8')
    if n < 1:
        raise ValueError(f'n must be >= 1 (at least one weight kept per block), got n={n}')
    if n > m:
        raise ValueError(f'n must be <= m (N:M keeps N of every M weights), got n={n}, m={m}; '
                         'swap them or lower n')


def _shape(weight_or_shape: Union[torch.Tensor, Sequence[int]]) -> tuple:
    if isinstance(weight_or_shape, torch.Tensor):
        return tuple(weight_or_shape.shape)
    return tuple(int(s) for s in weight_or_shape)


def is_nm_eligible(weight_or_shape: Union[torch.Tensor, Sequence[int]], m: int) -> bool:
    """Whether a weight can carry an N:M mask with blocks of ``m``.

    Args:
        weight_or_shape (Tensor | Sequence[int]): A weight or its shape: 4-D conv
            ``(O, C, kh, kw)`` (``C`` = in_channels / groups) or 2-D linear ``(O, C)``.
        m (int): Block size.

    Returns:
        bool: True for a non-empty 2-D or 4-D weight with ``C % m == 0``; False otherwise
        (other ranks, such as biases, are never eligible).
    """
    check_nm(1, m)
    shape = _shape(weight_or_shape)
    return len(shape) in (2, 4) and min(shape) > 0 and shape[1] % m == 0


# torch._assert_async on CUDA takes messages of fewer than 255 characters.
_ASYNC_MESSAGE_LENGTH = 250


def _shorten(text: str, length: int) -> str:
    return text if len(text) <= length else text[:length - 3] + '...'


def check_finite(tensor: torch.Tensor, name: str = 'weight', nonnegative: bool = False, *,
                 sync: bool = True) -> None:
    """Reject a tensor holding NaN or Inf.

    One reduction and no temporary the size of the tensor (masks are recomputed every
    training iteration, so this must stay cheap): ``amax`` for tensors known to be
    non-negative (magnitudes), else ``aminmax``; both propagate NaN.

    CPU tensors, and every tensor with ``sync=True`` (the default), raise ``ValueError`` at
    once. With ``sync=False`` (the mask functions) a tensor on another device is not read on
    the host: the check goes to ``torch._assert_async`` with the same message, so on CUDA a
    failure surfaces as a ``RuntimeError`` (device-side assert, message printed by the
    device) at the next synchronisation. Devices without that op check synchronously.

    Args:
        tensor (Tensor): Floating-point tensor to check.
        name (str): Its name in the error message (e.g. a layer name such as
            ``'backbone.layer3.1.conv2'``).
        nonnegative (bool): Whether every finite entry is known to be >= 0.
        sync (bool): Whether a non-CPU tensor may be read on the host (a device sync).

    Raises:
        ValueError: ``'<name> of shape (...) has non-finite values (NaN or Inf); fix the
            training divergence or the checkpoint first'``.
    """
    if nonnegative:
        finite = torch.isfinite(tensor.amax())
    else:
        low, high = torch.aminmax(tensor)
        finite = torch.isfinite(low) & torch.isfinite(high)
    message = (f'{name} of shape {tuple(tensor.shape)} has non-finite values (NaN or Inf); '
               'fix the training divergence or the checkpoint first')
    if not sync and tensor.device.type != 'cpu':
        try:
            torch._assert_async(finite, _shorten(message, _ASYNC_MESSAGE_LENGTH))
            return
        except NotImplementedError:  # a backend without the op: check synchronously
            pass
    if not bool(finite):
        raise ValueError(message)


_check_finite = check_finite  # check_weight's flag of the same name shadows the function


def check_weight(weight: torch.Tensor, n: int, m: int, check_finite: bool = True) -> None:
    """Raise ``ValueError`` for a weight that cannot carry an N:M mask.

    Args:
        weight (Tensor): The weight to check.
        n (int): Weights kept per block.
        m (int): Block size.
        check_finite (bool): Also reject NaN/Inf. The mask functions pass False and check the
            magnitudes they compute anyway instead.
    """
    check_nm(n, m)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f'weight must be a torch.Tensor, got {type(weight).__name__}')
    if weight.dim() not in (2, 4):
        raise ValueError('weight must be a 4-D conv weight (O, C, kh, kw) or a 2-D linear '
                         f'weight (O, C), got shape {tuple(weight.shape)}')
    if not weight.is_floating_point():
        raise ValueError(f'weight must be a floating-point tensor, got {weight.dtype}; '
                         'convert it with .float()')
    if weight.numel() == 0:
        raise ValueError(f'weight of shape {tuple(weight.shape)} has no elements; there is '
                         'nothing to mask, leave this layer out')
    if weight.shape[1] % m:
        raise ValueError(f'm={m} must divide the {weight.shape[1]} input channels (per group) '
                         f'of the weight of shape {tuple(weight.shape)}; pick an m that divides '
                         'it or leave this layer dense')
    if check_finite:
        _check_finite(weight)


def check_mask_like(mask: torch.Tensor, weight: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``mask`` is a tensor of ``weight``'s shape."""
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f'mask must be a torch.Tensor, got {type(mask).__name__}')
    if mask.shape != weight.shape:
        raise ValueError(f'mask shape {tuple(mask.shape)} must equal the weight shape '
                         f'{tuple(weight.shape)}; recompute the mask from this weight')


def check_preserve(preserve: float) -> None:
    """Raise ``ValueError`` unless ``preserve`` is a number in [0, 1]."""
    if (isinstance(preserve, bool) or not isinstance(preserve, numbers.Real)
            or not 0.0 <= float(preserve) <= 1.0):
        raise ValueError(f'preserve must be a number in [0, 1] (the share of blocks exempt from '
                         f'N:M; 0 = fully N:M), got {preserve!r}')


def check_tau(tau: float) -> None:
    """Raise ``ValueError`` unless ``tau`` is a finite number > 0."""
    if (isinstance(tau, bool) or not isinstance(tau, numbers.Real)
            or not (math.isfinite(float(tau)) and float(tau) > 0)):
        raise ValueError(f'tau must be a positive number (the sigmoid temperature, default '
                         f'1e-2), got {tau!r}')


def check_decay(value: float, name: str = 'decay') -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0 (the SR-STE decay).

    A decay of 0 is refused: it would do nothing at the cost of a pass over every sparse
    weight; leave the decay out instead.

    Args:
        value (float): The decay strength (lambda).
        name (str): Its name in the message. Defaults to ``'decay'``.
    """
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not (math.isfinite(float(value)) and float(value) > 0)):
        raise ValueError(f'{name} must be a positive number (the SR-STE decay, finite and > 0, '
                         f'default 2e-4; leave the decay out rather than setting 0), '
                         f'got {value!r}')

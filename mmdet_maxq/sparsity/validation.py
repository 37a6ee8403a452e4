"""Argument checks shared by the mask functions: one clear ``ValueError`` per problem."""
import numbers
from typing import Sequence, Union

import torch


def check_nm(n: int, m: int) -> None:
    """Raise ``ValueError`` unless ``1 <= n <= m`` are integers."""
    for name, value in (('n', n), ('m', m)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f'{name} must be an integer, got {value!r}')
    if m < 1:
        raise ValueError(f'm must be >= 1, got m={m}')
    if n < 1:
        raise ValueError(f'n must be >= 1 (at least one weight kept per block), got n={n}')
    if n > m:
        raise ValueError(f'n must be <= m (N:M keeps N of every M weights), got n={n}, m={m}')


def _shape(weight_or_shape: Union[torch.Tensor, Sequence[int]]) -> tuple:
    if isinstance(weight_or_shape, torch.Tensor):
        return tuple(weight_or_shape.shape)
    return tuple(weight_or_shape)


def is_nm_eligible(weight_or_shape: Union[torch.Tensor, Sequence[int]], m: int) -> bool:
    """Whether a 4-D conv ``(O, C, kh, kw)`` or 2-D linear ``(O, C)`` weight has ``C % m == 0``.

    ``C`` is the input channels per group (``weight.shape[1]``). Other ranks are not eligible.
    """
    shape = _shape(weight_or_shape)
    return len(shape) in (2, 4) and shape[1] % m == 0


def check_weight(weight: torch.Tensor, n: int, m: int, check_finite: bool = True) -> None:
    """Raise ``ValueError`` for a weight that cannot carry an N:M mask."""
    check_nm(n, m)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f'weight must be a torch.Tensor, got {type(weight).__name__}')
    if weight.dim() not in (2, 4):
        raise ValueError('weight must be a 4-D conv weight (O, C, kh, kw) or a 2-D linear '
                         f'weight (O, C), got shape {tuple(weight.shape)}')
    if not weight.is_floating_point():
        raise ValueError(f'weight must be a floating-point tensor, got {weight.dtype}')
    if weight.shape[1] % m:
        raise ValueError(f'm={m} must divide the {weight.shape[1]} input channels (per group) '
                         f'of the weight of shape {tuple(weight.shape)}; pick an m that divides '
                         'it or leave this layer dense')
    if check_finite and not bool(torch.isfinite(weight).all()):
        raise ValueError(f'weight of shape {tuple(weight.shape)} has non-finite values (NaN or '
                         'Inf); fix the training divergence or the checkpoint first')


def check_preserve(preserve: float) -> None:
    if not isinstance(preserve, numbers.Real) or not 0.0 <= float(preserve) <= 1.0:
        raise ValueError(f'preserve must be a number in [0, 1], got {preserve!r}')


def check_tau(tau: float) -> None:
    if not isinstance(tau, numbers.Real) or not float(tau) > 0:
        raise ValueError(f'tau must be a positive number, got {tau!r}')

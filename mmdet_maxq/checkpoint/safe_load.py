"""Let ``torch.load(weights_only=True)`` read the checkpoints that MMEngine writes.

MMEngine 0.10.7 calls ``torch.load`` without ``weights_only``; since torch 2.6 that means
``weights_only=True``, and loading any checkpoint that MMEngine saved (``--resume``,
``load_from``, ``tools/test.py``) stops at ``UnpicklingError ... HistoryBuffer``. Instead of
turning ``weights_only`` off (which would run arbitrary pickled code), this module allow-lists
exactly the globals those checkpoints hold: the message hub's ``HistoryBuffer`` with the numpy
arrays and scalars inside it, and the ``Counter`` that multi-step schedulers keep. Any other
pickled object still fails with torch's own error.

``HistoryBuffer`` pickles its statistics methods as ``getattr(HistoryBuffer, 'mean')``.
Allowing ``builtins.getattr`` itself would hand a pickle every attribute of every allowed
object, so the name ``builtins.getattr`` is bound to :func:`history_buffer_getattr`, which
resolves only those methods.

An *empty* numpy array (a ``HistoryBuffer`` that logged nothing holds two: ``np.array([])``)
pickles its data as ``b''``, which pickle protocol 2 (``torch.save``'s) writes as a call of
``builtins.bytes`` with no argument (non-empty bytes use ``_codecs.encode``, which torch
allows). The name ``builtins.bytes`` is bound to :func:`pickled_empty_bytes`, which makes
exactly that ``b''`` and refuses any argument.

What an MMEngine 0.10.7 checkpoint holds (``Runner.save_checkpoint``): ``meta`` (strings,
numbers, ``dataset_meta``), ``state_dict`` (``OrderedDict`` of tensors), ``message_hub``
(``MessageHub.state_dict()``: ``log_scalars`` of ``HistoryBuffer`` with float64 arrays,
``runtime_info`` with plain values and numpy scalars), ``optimizer`` and ``param_schedulers``
(numbers, lists, tensors; ``MultiStepLR`` milestones are a ``Counter``), plus what hooks add
(EMA tensors; this project's ``RandomStateHook``: ``np.random.get_state()``, a uint32 array).
"""
import collections
import pickle
from typing import List

import numpy as np
import torch


def _numpy_globals() -> List:
    """The numpy reconstruction helpers, dtypes and dtype classes a pickled array refers to."""
    # numpy 2 moved numpy.core to numpy._core; pickles name the module of the numpy that wrote
    # them, so both spellings are allowed (each bound to the same function).
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    entries = []
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        entries.append((multiarray._reconstruct, f'{module}._reconstruct'))
        entries.append((multiarray.scalar, f'{module}.scalar'))
    entries += [np.ndarray, np.dtype]
    # Pickled dtypes name their class (numpy.dtypes.Float64DType, ...) since numpy 1.25.
    for code in '?bBhHiIlLqQefdgFDG':
        entries.append(type(np.dtype(code)))
    return entries


def history_buffer_getattr(obj, name: str):
    """``getattr`` restricted to the statistics methods of ``HistoryBuffer``.

    Raises:
        pickle.UnpicklingError: For any other object or attribute.
    """
    from mmengine.logging.history_buffer import HistoryBuffer

    if obj is HistoryBuffer and isinstance(name, str) and callable(
            HistoryBuffer.__dict__.get(name)) and not name.startswith('_'):
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({obj!r}, {name!r}); only HistoryBuffer statistics '
        'methods are allowed. Load only checkpoints you trust with weights_only=False')


def pickled_empty_bytes(*args) -> bytes:
    """``bytes()`` as pickle protocol 2 writes it for ``b''`` (the data of an empty array).

    Raises:
        pickle.UnpicklingError: For any argument (``bytes(n)`` would allocate ``n`` bytes;
            pickles never write it).
    """
    if args:
        raise pickle.UnpicklingError(
            f'checkpoint calls bytes() with arguments {args!r:.80}; only bytes() (an empty '
            'byte string) is allowed. Load only checkpoints you trust with weights_only=False')
    return b''


def mmengine_safe_globals() -> List:
    """The globals an MMEngine checkpoint needs, as ``add_safe_globals`` takes them."""
    from mmengine.logging.history_buffer import HistoryBuffer

    return [HistoryBuffer, collections.Counter, collections.OrderedDict,
            (history_buffer_getattr, 'builtins.getattr'),
            (pickled_empty_bytes, 'builtins.bytes')] + _numpy_globals()


def allow_mmengine_checkpoints() -> None:
    """Allow-list :func:`mmengine_safe_globals` for ``torch.load(weights_only=True)``.

    Idempotent; called when :mod:`mmdet_maxq` is imported.
    """
    torch.serialization.add_safe_globals(mmengine_safe_globals())

"""Is a local file a readable PyTorch checkpoint? Decided from its header, before loading it.

The one home of that check: the command-line tools (``mmdet_maxq.cli.check_checkpoint_file``)
and the checkpoint converter (:func:`~.convert.load_checkpoint_file`) phrase its answer in their
own errors.
"""
import io
import os
import os.path as osp
import pickle
import zipfile
from typing import Optional

# torch.save's legacy (pre-1.6, non-zip) format opens with this pickled number.
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001


class _NoGlobals(pickle.Unpickler):
    """Reads plain pickled data only (numbers, strings, dicts): any global is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f'global {module}.{name} in a checkpoint header')


def _is_legacy_torch_file(path: str) -> bool:
    """Whether ``path`` opens like ``torch.save(..., _use_new_zipfile_serialization=False)``.

    That format starts with three small pickles: the magic number, the protocol version
    (1001) and a dict of system info. They are read with globals refused; the rest of the file
    (the pickled object and the raw storages) is left to ``torch.load``.
    """
    try:
        with open(path, 'rb') as f:
            head = f.read(4096)  # the three header pickles take about 150 bytes
        if not head.startswith(b'\x80'):  # pickle protocol >= 2, as torch.save writes
            return False
        unpickler = _NoGlobals(io.BytesIO(head))
        return (unpickler.load() == _LEGACY_MAGIC and unpickler.load() == _LEGACY_PROTOCOL
                and isinstance(unpickler.load(), dict))
    except Exception:  # noqa: BLE001  anything unreadable is simply not this format
        return False


def checkpoint_file_problem(path: str) -> Optional[str]:
    """What makes the local file ``path`` not a readable PyTorch checkpoint, or None.

    A PyTorch checkpoint is a complete zip archive holding a ``data.pkl`` (``torch.save`` since
    1.6) or the legacy pickle format (``_use_new_zipfile_serialization=False``), told apart by
    their headers; anything else (missing file, folder, truncated zip, random bytes, empty
    file) is a problem. Only the header and the zip directory are read.

    Args:
        path (str): A local path (``~`` is not expanded here).

    Returns:
        str, optional: The problem as a predicate with its fix, e.g. ``'does not exist; ...'``,
        to be put after the checkpoint's name; None for a readable checkpoint.
    """
    if not osp.exists(path):
        return 'does not exist; pass the path of an existing .pth file (training writes ' \
            'WORK_DIR/epoch_N.pth)'
    if not osp.isfile(path) or not os.access(path, os.R_OK):
        return 'is not a readable file; check the path and its permissions'
    try:
        with open(path, 'rb') as f:
            head = f.read(4)
    except OSError as err:
        return f'is not a readable file ({err.strerror}); check the path and its permissions'
    if head.startswith(b'PK'):  # a zip archive: is it complete (central directory at the end)?
        try:
            with zipfile.ZipFile(path) as archive:  # reads the central directory only
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
            return (f'is not a PyTorch checkpoint: a damaged zip archive ({err}; corrupt or '
                    'truncated?); re-download or re-save it')
        if any(name.endswith('data.pkl') for name in names):
            return None
        return ('is a zip archive but not a PyTorch checkpoint (no data.pkl inside); pass the '
                '.pth file that torch.save or training wrote')
    if _is_legacy_torch_file(path):
        return None
    return ('is not a PyTorch checkpoint: its header is neither a zip archive nor the legacy '
            'torch.save format (corrupt or truncated?); re-download or re-save it')


def checkpoint_meta(path: str) -> dict:
    """The ``meta`` dict of a local checkpoint (tensors memory-mapped, not read), ``{}`` if none.

    Args:
        path (str): A local checkpoint file.

    Raises:
        RuntimeError, EOFError, OSError, pickle.UnpicklingError: As ``torch.load`` raises them
            for a damaged, truncated or unsafe file (callers phrase their own error).
    """
    import torch

    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except RuntimeError as err:
        if 'mmap' not in str(err):
            raise
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)  # legacy format
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    return meta if isinstance(meta, dict) else {}

"""Writes that never leave a half-written file at the destination."""
import contextlib
import os
import os.path as osp
import shutil
import tempfile
from typing import IO, Callable, Iterator


def _usual_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def temp_file_beside(path: str, suffix: str = '.tmp') -> str:
    """Create an empty hidden temporary file in ``path``'s folder (created when missing).

    It gets the usual file mode (``mkstemp`` makes 0600), so renaming it onto ``path`` gives the
    file a user expects. Same folder, so the rename is atomic.

    Args:
        path (str): The destination the temporary file stands in for.
        suffix (str): Its suffix (e.g. ``'.py'`` for a config that must be parsed before the
            rename). Defaults to ``'.tmp'``.

    Returns:
        str: The temporary file's path.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix=suffix, dir=folder)
    try:
        os.fchmod(fd, _usual_file_mode())
    finally:
        os.close(fd)
    return tmp


def atomic_write(path: str, write: Callable[[IO], None], binary: bool = True) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it onto ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.

    Args:
        path (str): Destination (its folder is created when missing).
        write (callable): Writes the content to the open file it is given.
        binary (bool): Open the file in binary mode. Defaults to True.
    """
    tmp = temp_file_beside(path)
    try:
        with open(tmp, 'wb' if binary else 'w') as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.unlink(tmp)
        raise


def check_new_path(path: str, overwrite: bool = False, flag: str = '--overwrite') -> None:
    """Refuse to replace an existing ``path`` unless ``overwrite``: the one home of that rule.

    Args:
        path (str): A destination file or folder.
        overwrite (bool): Whether replacing it was asked for. Defaults to False.
        flag (str): How the caller asks for it, named in the error. Defaults to
            ``'--overwrite'``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    if osp.exists(path) and not overwrite:
        raise FileExistsError(f'{path} exists; pass {flag} to replace it')


def write_new_file(path: str, write: Callable[[IO], None], binary: bool = True,
                   overwrite: bool = False) -> None:
    """:func:`check_new_path`, then :func:`atomic_write`: a new file, complete or not at all.

    Args:
        path (str): Destination (its folder is created when missing).
        write (callable): Writes the content to the open file it is given.
        binary (bool): Open the file in binary mode. Defaults to True.
        overwrite (bool): Replace an existing file. Defaults to False.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False (nothing written).
    """
    check_new_path(path, overwrite)
    atomic_write(path, write, binary=binary)


@contextlib.contextmanager
def new_directory(out_dir: str, overwrite: bool = False,
                  flag: str = '--overwrite') -> Iterator[str]:
    """Build a folder in a hidden staging folder beside ``out_dir``, then rename it into place.

    The ``with`` body writes into the yielded staging path; when it finishes, an existing
    ``out_dir`` (allowed by ``overwrite``) is replaced by it; on any error the staging folder
    is removed and ``out_dir`` is left as it was.

    Args:
        out_dir (str): The folder to create.
        overwrite (bool): Replace an existing ``out_dir``. Defaults to False.
        flag (str): How the caller asks for replacing, named in the error. Defaults to
            ``'--overwrite'``.

    Yields:
        str: The staging folder to write into.

    Raises:
        FileExistsError: ``out_dir`` exists and ``overwrite`` is False (nothing written).
    """
    out_dir = osp.abspath(out_dir)
    check_new_path(out_dir, overwrite, flag=flag)
    parent = osp.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f'.{osp.basename(out_dir)}.', dir=parent)
    try:
        yield staging
        if osp.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

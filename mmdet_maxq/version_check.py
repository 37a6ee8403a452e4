"""Check at import that the installed stack is one mmdet-maxq supports.

The supported versions have one home: ``install_requires`` in ``setup.cfg``. The check reads
them from the ``setup.cfg`` beside the package when the package runs from a source checkout
(the file that is the truth for the code being run, installed in editable mode or not), and
otherwise from the installed distribution's metadata (``importlib.metadata.requires``), which
pip wrote from that same list. Whatever ``install_requires`` lists is checked.
"""
import configparser
import os.path as osp
from importlib import metadata
from typing import Dict, List, Optional

DISTRIBUTION = 'mmdet-maxq'
SETUP_HINT = 'run `bash tools/setup_env.sh` (or `make setup`) to install the supported stack'
# setup.cfg of a source checkout: one level above the package directory.
SOURCE_SETUP_CFG = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'setup.cfg')


def _installed(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def requirements_from_setup_cfg(path: str) -> List[str]:
    """The ``[options] install_requires`` lines of a ``setup.cfg`` (comments dropped).

    Args:
        path (str): The ``setup.cfg`` to read.

    Returns:
        list[str]: One requirement string per line, e.g. ``'mmdet>=3.0.0,<3.4.0'``.

    Raises:
        ImportError: If the file has no ``[options] install_requires``.
    """
    parser = configparser.ConfigParser(inline_comment_prefixes=('#', ';'))
    parser.read(path, encoding='utf-8')
    if not parser.has_option('options', 'install_requires'):
        raise ImportError(f'mmdet-maxq: {path} has no [options] install_requires, so the '
                          'supported versions are unknown; restore it from the repository')
    lines = parser.get('options', 'install_requires').splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith('#')]


def _is_our_setup_cfg(path: str) -> bool:
    """Whether ``path`` is mmdet-maxq's own ``setup.cfg`` (not another project's file that
    happens to sit beside the installed package)."""
    if not osp.isfile(path):
        return False
    parser = configparser.ConfigParser(inline_comment_prefixes=('#', ';'))
    parser.read(path, encoding='utf-8')
    return parser.get('metadata', 'name', fallback=None) == DISTRIBUTION


def declared_requirements(setup_cfg: Optional[str] = SOURCE_SETUP_CFG) -> List[str]:
    """mmdet-maxq's ``install_requires``: from ``setup_cfg`` if that file is mmdet-maxq's,
    else from the installed distribution's metadata.

    Args:
        setup_cfg (str, optional): The source checkout's ``setup.cfg``. Defaults to the one
            beside the package; None reads the installed metadata only.

    Returns:
        list[str]: Requirement strings; the metadata's carry markers (``; extra == "tests"``
        for an extra's), which :func:`check_versions` evaluates.

    Raises:
        ImportError: If neither a source ``setup.cfg`` nor an installed distribution is found.
    """
    if setup_cfg is not None and _is_our_setup_cfg(setup_cfg):
        return requirements_from_setup_cfg(setup_cfg)
    try:
        requires = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError as err:
        raise ImportError(
            f'mmdet-maxq: cannot find its supported versions: the package is neither installed '
            f'(no {DISTRIBUTION} distribution) nor run from a source checkout (no '
            f'{setup_cfg}). Install it with `pip install -e .` from the repository') from err
    return list(requires)


def check_versions(requirements: Optional[List[str]] = None) -> Dict[str, str]:
    """Raise if a required package is missing or outside its supported range.

    Args:
        requirements (list[str], optional): Requirement strings (``'mmdet>=3.0.0,<3.4.0'``).
            Defaults to :func:`declared_requirements`.

    Returns:
        dict: The installed version of each checked package.

    Raises:
        ImportError: Naming every missing package or unsupported version, the supported
            range, and how to fix it.
    """
    from packaging.requirements import Requirement
    from packaging.version import Version

    requirements = declared_requirements() if requirements is None else requirements
    found, problems = {}, []
    for line in requirements:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({'extra': ''}):
            continue  # an extra's requirement, or not for this platform / Python
        spec = str(req.specifier) or 'any version'
        version = _installed(req.name)
        if version is None:
            problems.append(f'{req.name} is not installed (mmdet-maxq requires {req.name} '
                            f'{spec})')
            continue
        found[req.name] = version
        # Local build tags (2.13.0+cpu, +cu121) do not change compatibility.
        if not req.specifier.contains(Version(version).public, prereleases=True):
            problems.append(f'{req.name} {version} is installed, but mmdet-maxq requires '
                            f'{req.name} {spec}')
    if problems:
        raise ImportError('mmdet-maxq: ' + '; '.join(problems) + f'. To fix it, {SETUP_HINT}.')
    return found

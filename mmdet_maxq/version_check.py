"""Check at import that the installed stack is one mmdet-maxq supports."""
from importlib import metadata
from typing import Dict, Optional, Tuple

# (minimum inclusive, maximum exclusive) per distribution.
SUPPORTED: Dict[str, Tuple[str, str]] = {
    'torch': ('2.0.0', '3.0.0'),
    'mmcv': ('2.0.0rc4', '2.2.0'),
    'mmengine': ('0.10.0', '1.0.0'),
    'mmdet': ('3.0.0', '3.4.0'),
}
SETUP_HINT = 'run `bash tools/setup_env.sh` (or `make setup`) to install the supported stack'


def _installed(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_versions(supported: Optional[Dict[str, Tuple[str, str]]] = None) -> Dict[str, str]:
    """Raise if a required package is missing or outside its supported range.

    Args:
        supported (dict, optional): ``{name: (min_inclusive, max_exclusive)}``. Defaults to
            :data:`SUPPORTED`.

    Returns:
        dict: The installed version of each checked package.

    Raises:
        ImportError: Naming every missing package or unsupported version, the supported
            range, and how to fix it.
    """
    from packaging.version import Version

    supported = SUPPORTED if supported is None else supported
    found, problems = {}, []
    for name, (low, high) in supported.items():
        version = _installed(name)
        if version is None:
            problems.append(f'{name} is not installed (mmdet-maxq supports {low} <= {name} < {high})')
            continue
        found[name] = version
        # Local build tags (2.13.0+cpu, +cu121) do not change compatibility.
        base = Version(version.split('+')[0])
        if not Version(low) <= base < Version(high):
            problems.append(
                f'{name} {version} is installed, but mmdet-maxq supports {low} <= {name} < {high}')
    if problems:
        raise ImportError('mmdet-maxq: ' + '; '.join(problems) + f'. To fix it, {SETUP_HINT}.')
    return found

"""Silence the known-harmless warnings that open every tool's output; nothing else.

With setuptools >= 80, ``import pkg_resources`` warns ``pkg_resources is deprecated as an API
...`` (a ``UserWarning``; older setuptools used a ``DeprecationWarning`` with the same text).
MMEngine 0.10.7 imports ``pkg_resources`` in ``mmengine.utils.package_utils`` whenever a config
names a package scope (``mmdet::...`` in ``_base_``) and reloads it with ``importlib.reload``, so
each tool printed the warning three times: once attributed to
``mmengine.utils.package_utils`` and twice to ``importlib``. The project needs setuptools < 81
precisely so that ``pkg_resources`` still exists (see ``setup.cfg``); the warning tells the user
nothing they can act on.

The warnings are raised while a config is parsed, so the tools' ``load_config``
(:mod:`mmdet_maxq.cli`) installs the filter first. This module imports only :mod:`warnings`.
"""
import warnings

__all__ = ['PKG_RESOURCES_MESSAGE', 'PKG_RESOURCES_MODULES', 'silence_known_warnings']

# The start of the message (warnings match it case-insensitively from the first character).
PKG_RESOURCES_MESSAGE = r'pkg_resources is deprecated as an API'
# Modules the warning is attributed to: the importer (MMEngine; MMCV and MMDetection for
# their own versions) and importlib, whose reload() re-runs pkg_resources' module code.
PKG_RESOURCES_MODULES = r'(mmengine|mmcv|mmdet|importlib)(\.|$)'


def silence_known_warnings() -> None:
    """Ignore the ``pkg_resources is deprecated`` warnings raised for MMEngine / MMCV.

    One filter: that message, the ``UserWarning`` / ``DeprecationWarning`` categories it comes
    with, and only when raised on behalf of :data:`PKG_RESOURCES_MODULES`. Every other warning
    (including other ``pkg_resources`` ones, and this one raised for another package) still
    shows. Idempotent: ``warnings.filterwarnings`` does not add a filter twice.
    """
    for category in (UserWarning, DeprecationWarning):
        warnings.filterwarnings('ignore', message=PKG_RESOURCES_MESSAGE, category=category,
                                module=PKG_RESOURCES_MODULES)

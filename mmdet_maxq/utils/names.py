"""Module-name helpers shared by the hooks and the tools."""


def stage_of(name: str) -> str:
    """The stage of a detector module name: ``'backbone.layer2.0.conv1'`` -> ``'backbone.layer2'``.

    Args:
        name (str): A module name relative to the detector.

    Returns:
        str: Its first two components (the whole name when it has fewer).
    """
    return '.'.join(name.split('.')[:2])

"""Module-name helpers shared by the hooks and the tools."""


def stage_prefix(name: str) -> str:
    """The stage prefix of a detector module name.

    ``'backbone.layer2.0.conv1'`` -> ``'backbone.layer2'``; ``'neck.lateral_convs.0.conv'`` ->
    ``'neck.lateral_convs'``.

    Args:
        name (str): A module name relative to the detector.

    Returns:
        str: Its first two components (the whole name when it has fewer).
    """
    return '.'.join(name.split('.')[:2])

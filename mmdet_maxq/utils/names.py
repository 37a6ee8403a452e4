"""Module-name helpers shared by the hooks and the tools."""
from typing import List, Tuple


def _split(name: str) -> Tuple[List[str], List[str]]:
    """``(stage components, the rest)`` of a module name (see :func:`stage_prefix`)."""
    parts = name.split('.')
    cut = 3 if len(parts) > 3 and parts[1] == 'stages' and parts[2].isdigit() else 2
    return parts[:cut], parts[cut:]


def stage_prefix(name: str) -> str:
    """The stage prefix of a module name: its first two components, and the stage index of a
    ``stages`` list.

    ``'backbone.layer2.0.conv1'`` -> ``'backbone.layer2'``; ``'neck.lateral_convs.0.conv'`` ->
    ``'neck.lateral_convs'``; ``'backbone.stages.1.blocks.0.attn.w_msa.qkv'`` (MMDetection's
    Swin) and ``'backbone.stages.1.0.pointwise_conv1'`` (mmpretrain's ConvNeXt) ->
    ``'backbone.stages.1'``; ``'backbone.layers.3.attn.qkv'`` (ViT) -> ``'backbone.layers'``;
    ``'encoder.layers.2.self_attn.value_proj'`` (DINO) -> ``'encoder.layers'``.

    Args:
        name (str): A module name relative to the model.

    Returns:
        str: The stage (the whole name when it has fewer components).
    """
    return '.'.join(_split(name)[0])


def block_prefix(name: str) -> str:
    """The block (residual or transformer block) prefix of a module name.

    The stage (:func:`stage_prefix`) and the index that follows it, or the named list and
    index that follow it: ``'backbone.layer2.0.downsample.0'`` -> ``'backbone.layer2.0'``;
    ``'backbone.stages.1.blocks.0.ffn.layers.0.0'`` -> ``'backbone.stages.1.blocks.0'``;
    ``'backbone.stages.1.0.pointwise_conv1'`` -> ``'backbone.stages.1.0'``;
    ``'backbone.layers.3.attn.qkv'`` -> ``'backbone.layers.3'``;
    ``'encoder.layers.2.self_attn.value_proj'`` -> ``'encoder.layers.2'``. A layer outside
    any block (``'backbone.conv1'``, ``'backbone.stages.1.downsample.reduction'``) gets its
    stage.

    Args:
        name (str): A module name relative to the model.

    Returns:
        str: The block, or the stage when the layer is in no block.
    """
    stage, rest = _split(name)
    if len(rest) > 1 and rest[0].isdigit():
        return '.'.join(stage + rest[:1])
    if len(rest) > 2 and rest[1].isdigit():
        return '.'.join(stage + rest[:2])
    return '.'.join(stage)

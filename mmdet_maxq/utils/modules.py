"""Replacing a submodule by its dotted name (plain PyTorch: the torch-only 2:4 path uses it)."""
import torch.nn as nn


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule called ``name`` (dotted, e.g. ``backbone.layer1.0.conv1``) of
    ``model`` by ``module``."""
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)

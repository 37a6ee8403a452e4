"""Checkpoints in the MaxQ paper's own layout, built in-process (docs/design.md: the mask, the
checkpoint formats).

A helper for tests, not a test file. :func:`build_paper_model` writes, from the layout alone, a
torchvision-shaped ResNet whose convs are wrapped with their BN the way the paper's
classification code wraps them::

    conv1, bn1                              stem, dense
    layerI.J.convbnK.{conv, scale, mask}    K = 1, 2 (basic) or 1, 2, 3 (bottleneck), sparse
    layerI.J.downsample.{conv, scale, mask} the projection shortcut, sparse
    fc                                      dense

Each sparse conv computes with ``W * S(W)`` (``S`` = :func:`~mmdet_maxq.sparsity.maxq_mask` at
preserve 0, or the hard :func:`~mmdet_maxq.sparsity.nm_mask` for ``method='srste'``), recomputed
in every training forward and kept in the ``mask`` buffer for eval, as the paper's code does.
The BN running statistics are measured from that model's own forward (cumulative average over
a few random batches), so they describe ``W * S(W)`` exactly as a trained model's would.

:func:`paper_state_dict` saves it as the paper's code does, and :func:`paper_backbone_features`
gives the four stage outputs computed with plain torch ops on this module, independently of
MMDetection, for comparison with an MMDetection ``ResNet(out_indices=(0, 1, 2, 3),
style='pytorch')`` that loaded the converted checkpoint. Pure PyTorch: no OpenMMLab import.
"""
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmdet_maxq.sparsity import is_nm_eligible, maxq_mask, nm_mask

__all__ = [
    'ARCHS', 'METHODS', 'ConvBN', 'PaperBlock', 'PaperResNet', 'build_paper_model',
    'paper_state_dict', 'paper_backbone_features', 'random_images'
]

# depth -> (bottleneck?, blocks per stage), as torchvision's / MMDetection's ResNet.
ARCHS: Dict[int, Tuple[bool, Tuple[int, ...]]] = {
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
}
METHODS = ('maxq', 'srste')


class ConvBN(nn.Module):
    """The paper's sparse conv + BN pair: ``.conv`` (no bias), ``.scale`` (BN), ``mask`` buffer.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_size (int): 1 or 3.
        stride (int): Conv stride.
        n (int): Non-zeros kept per block.
        m (int): Block size along the input channels.
        method (str): ``'maxq'`` (soft mask ``S``) or ``'srste'`` (hard N:M mask).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 n: int, m: int, method: str):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                              padding=kernel_size // 2, bias=False)
        self.scale = nn.BatchNorm2d(out_channels)
        self.n, self.m, self.method = n, m, method
        self.register_buffer('mask', torch.ones_like(self.conv.weight))
        self.refresh_mask()

    @property
    def eligible(self) -> bool:
        """Whether the conv can be N:M (``C % m == 0``); an ineligible one stays dense."""
        return is_nm_eligible(self.conv.weight, self.m)

    @torch.no_grad()
    def refresh_mask(self) -> None:
        """``mask = S(W)`` (or the hard mask), from the current weights."""
        if not self.eligible:
            self.mask.fill_(1.0)
            return
        weight = self.conv.weight.detach()
        if self.method == 'maxq':
            self.mask.copy_(maxq_mask(weight, self.n, self.m, preserve=0.0))
        else:
            self.mask.copy_(nm_mask(weight, self.n, self.m, preserve=0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.refresh_mask()  # the paper recomputes masks in every training forward
        conv = self.conv
        return self.scale(F.conv2d(x, conv.weight * self.mask, None, conv.stride, conv.padding))


class PaperBlock(nn.Module):
    """A torchvision BasicBlock / Bottleneck built from :class:`ConvBN` (stride on the 3x3)."""

    def __init__(self, inplanes: int, planes: int, stride: int, bottleneck: bool, n: int,
                 m: int, method: str):
        super().__init__()
        self.bottleneck = bottleneck
        expansion = 4 if bottleneck else 1
        if bottleneck:
            self.convbn1 = ConvBN(inplanes, planes, 1, 1, n, m, method)
            self.convbn2 = ConvBN(planes, planes, 3, stride, n, m, method)
            self.convbn3 = ConvBN(planes, planes * expansion, 1, 1, n, m, method)
        else:
            self.convbn1 = ConvBN(inplanes, planes, 3, stride, n, m, method)
            self.convbn2 = ConvBN(planes, planes, 3, 1, n, m, method)
        self.downsample = None
        if stride != 1 or inplanes != planes * expansion:
            self.downsample = ConvBN(inplanes, planes * expansion, 1, stride, n, m, method)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.convbn1(x))
        if self.bottleneck:
            out = F.relu(self.convbn2(out))
            out = self.convbn3(out)
        else:
            out = self.convbn2(out)
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class PaperResNet(nn.Module):
    """The paper-layout ResNet (see the module docstring); ``forward`` returns the logits."""

    def __init__(self, depth: int, base_channels: int, n: int, m: int, method: str,
                 num_classes: int = 10):
        super().__init__()
        if depth not in ARCHS:
            raise ValueError(f'depth {depth} not in {sorted(ARCHS)}')
        if method not in METHODS:
            raise ValueError(f'method {method!r} not in {METHODS}')
        bottleneck, counts = ARCHS[depth]
        expansion = 4 if bottleneck else 1
        self.depth, self.base_channels, self.n, self.m, self.method = (depth, base_channels, n, m,
                                                                       method)
        self.conv1 = nn.Conv2d(3, base_channels, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_channels)
        inplanes = base_channels
        for stage, num_blocks in enumerate(counts, start=1):
            planes = base_channels * 2**(stage - 1)
            blocks = []
            for idx in range(num_blocks):
                stride = 2 if stage > 1 and idx == 0 else 1
                blocks.append(PaperBlock(inplanes, planes, stride, bottleneck, n, m, method))
                inplanes = planes * expansion
            self.add_module(f'layer{stage}', nn.Sequential(*blocks))
        self.fc = nn.Linear(inplanes, num_classes)

    def sparse_layers(self) -> List[Tuple[str, ConvBN]]:
        """``(name, module)`` of every :class:`ConvBN`, in module order."""
        return [(name, mod) for name, mod in self.named_modules() if isinstance(mod, ConvBN)]

    def stages(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The outputs of ``layer1`` ... ``layer4``."""
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        outs = []
        for stage in range(1, 5):
            x = getattr(self, f'layer{stage}')(x)
            outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(x)[-1]
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def random_images(batch: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Normal random images ``(batch, 3, size, size)`` from a private generator."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=gen)


def build_paper_model(depth: int = 50,
                      base_channels: int = 16,
                      n: int = 2,
                      m: int = 8,
                      seed: int = 0,
                      method: str = 'maxq',
                      calib_batches: int = 4,
                      calib_shape: Tuple[int, int, int, int] = (2, 3, 64, 64)) -> PaperResNet:
    """A paper-layout ResNet with random weights and BN statistics measured from its forward.

    The weights are seeded (``seed``; the global RNG is left as it was): PyTorch's default conv
    initialisation, BN affine parameters around (1, 0). The BN running statistics are then
    measured in train mode with ``momentum=None`` (cumulative average) over ``calib_batches``
    random batches of ``calib_shape``, with the masks recomputed in each forward as the paper's
    training does; the model is returned in eval mode with ``momentum`` back at 0.1.

    Args:
        depth (int): 18, 34, 50 or 101.
        base_channels (int): Width of the stem and ``layer1`` (64 for a standard ResNet; 16
            makes a fast narrow one).
        n (int): Non-zeros kept per block.
        m (int): Block size.
        seed (int): Weight and calibration seed.
        method (str): ``'maxq'`` (``W * S(W)``) or ``'srste'`` (``W * L(W)``).
        calib_batches (int): Batches used to measure the BN statistics.
        calib_shape (tuple): Shape of one calibration batch.

    Returns:
        PaperResNet: In eval mode.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PaperResNet(depth, base_channels, n, m, method)
        with torch.no_grad():
            for mod in model.modules():
                if isinstance(mod, nn.BatchNorm2d):
                    mod.weight.uniform_(0.5, 1.5)
                    mod.bias.normal_(0.0, 0.1)
        for _, conv in model.sparse_layers():
            conv.refresh_mask()
    bns = [mod for mod in model.modules() if isinstance(mod, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for idx in range(calib_batches):
            gen = torch.Generator().manual_seed(seed * 1000 + idx + 1)
            model(torch.randn(*calib_shape, generator=gen))
    for bn in bns:
        bn.momentum = 0.1
    return model.eval()


def paper_state_dict(model: PaperResNet, prefix: str = 'module.') -> Dict[str, Dict]:
    """``{'state_dict': ...}`` exactly as the paper's classification code saves it.

    Keys are ``prefix`` + the module names: ``module.conv1.weight``, ``module.bn1.*``,
    ``module.layer1.0.convbn1.conv.weight``, ``module.layer1.0.convbn1.scale.running_mean``,
    ``module.layer1.0.convbn1.mask`` (the last mask ``S``), ``module.layer2.0.downsample.conv
    .weight`` / ``.downsample.scale.*`` / ``.downsample.mask``, ``module.fc.*``.

    Args:
        model (PaperResNet): From :func:`build_paper_model`.
        prefix (str): Wrapper prefix (``'module.'`` for DDP, ``''`` for none).

    Returns:
        dict: ``{'state_dict': OrderedDict}`` of detached CPU copies.
    """
    state = OrderedDict((prefix + key, value.detach().cpu().clone())
                        for key, value in model.state_dict().items())
    return {'state_dict': state}


@torch.no_grad()
def paper_backbone_features(model: PaperResNet, images: torch.Tensor) -> List[torch.Tensor]:
    """The four stage outputs (``layer1`` ... ``layer4``) of ``model`` in eval mode.

    Computed with plain torch ops on the paper-layout module (stored masks, BN running
    statistics), independently of MMDetection. The model's train/eval mode is restored.

    Args:
        model (PaperResNet): From :func:`build_paper_model`.
        images (Tensor): ``(B, 3, H, W)``.

    Returns:
        list[Tensor]: Four feature maps, strides 4, 8, 16, 32.
    """
    was_training = model.training
    model.eval()
    try:
        return model.stages(images)
    finally:
        model.train(was_training)

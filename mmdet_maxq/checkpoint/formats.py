"""Recognise sparse ImageNet ResNet checkpoints and rename them to MMDetection's ResNet keys.

Three source layouts are supported (``docs/design.md``, "Checkpoint formats"):

* ``maxq``: the paper's classification code. Convs are wrapped with their BN
  (``layerI.J.convbnK.conv.weight``, ``layerI.J.convbnK.scale.*``) and carry a soft mask
  (``layerI.J.convbnK.mask``); the shortcut is ``layerI.J.downsample.{conv,scale}``.
* ``torchvision``: plain torchvision names (``conv1``, ``bn1``, ``layerI.J.convK``,
  ``layerI.J.bnK``, ``layerI.J.downsample.0`` / ``.1``), which MMDetection's ResNet also uses.
* ``mmpretrain``: the torchvision names under ``backbone.``, with the classifier under ``head.``.

Any of them may carry the ``module.`` (DDP) and ``_orig_mod.`` (``torch.compile``) wrapper
prefixes, stacked in any order. Pure PyTorch: nothing here imports OpenMMLab.
"""
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch

FORMATS = ('maxq', 'torchvision', 'mmpretrain')
WRAPPER_PREFIXES = ('module.', '_orig_mod.')
BN_SUFFIXES = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')

# depth -> (block type, blocks per stage), as in MMDetection's ResNet.arch_settings.
RESNET_ARCHS: Dict[int, Tuple[str, Tuple[int, ...]]] = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
    152: ('bottleneck', (3, 8, 36, 3)),
}

# The paper's names -> torchvision names; the first group is the block prefix ``layerI.J``.
_MAXQ_RULES = [
    (re.compile(r'^(layer\d+\.\d+)\.convbn(\d+)\.conv\.(.+)$'), r'\1.conv\2.\3'),
    (re.compile(r'^(layer\d+\.\d+)\.convbn(\d+)\.scale\.(.+)$'), r'\1.bn\2.\3'),
    (re.compile(r'^(layer\d+\.\d+)\.downsample\.conv\.(.+)$'), r'\1.downsample.0.\2'),
    (re.compile(r'^(layer\d+\.\d+)\.downsample\.scale\.(.+)$'), r'\1.downsample.1.\2'),
]
_MAXQ_MASK_RULES = [
    (re.compile(r'^(layer\d+\.\d+)\.convbn(\d+)\.mask$'), r'\1.conv\2.weight'),
    (re.compile(r'^(layer\d+\.\d+)\.downsample\.mask$'), r'\1.downsample.0.weight'),
    (re.compile(r'^conv1\.mask$'), 'conv1.weight'),
]
_MAXQ_MARKER = re.compile(r'^layer\d+\.\d+\.convbn\d+\.(conv|scale)\.')
_TV_MARKER = re.compile(r'^layer\d+\.\d+\.conv\d+\.weight$')
_MMPRE_MARKER = re.compile(r'^backbone\.layer\d+\.\d+\.conv\d+\.weight$')
_BLOCK_KEY = re.compile(r'^layer(\d+)\.(\d+)\.')


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, recognised or converted as asked (bad user input)."""


def summarize(items: Sequence[str], limit: int = 5) -> str:
    """Join the first ``limit`` items and say how many more there are.

    Args:
        items (Sequence[str]): What to list.
        limit (int): How many to show.

    Returns:
        str: ``'a, b, c ... and K more'`` (or just the items when there are few).
    """
    items = list(items)
    shown = ', '.join(items[:limit])
    if len(items) > limit:
        shown += f' ... and {len(items) - limit} more'
    return shown


def extract_state_dict(obj: object) -> Dict[str, torch.Tensor]:
    """Find the weights inside a loaded checkpoint.

    Args:
        obj (object): What ``torch.load`` returned: a bare state dict, or a dict holding one
            under ``'state_dict'`` or ``'model'``.

    Returns:
        dict: The state dict (its tensor entries, in their order).

    Raises:
        CheckpointError: When no state dict can be found.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f'expected a dict of weights, found a {type(obj).__name__}')
    for key in ('state_dict', 'model'):
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    tensors = OrderedDict((k, v) for k, v in obj.items() if isinstance(v, torch.Tensor))
    if not tensors:
        raise CheckpointError(
            'no weights found: expected a state dict, or a dict with one under "state_dict" '
            f'or "model"; top-level keys: {summarize([str(k) for k in obj])}')
    return tensors


def strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Remove ``module.`` / ``_orig_mod.`` prefixes, however many and in whatever order.

    Args:
        state_dict (Mapping[str, Tensor]): Source weights.

    Returns:
        dict: The same tensors under the stripped names.
    """
    out = OrderedDict()
    for key, value in state_dict.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix):], True
        out[key] = value
    return out


def detect_format(keys: Iterable[str]) -> str:
    """Tell the checkpoint format from its (prefix-stripped) key names.

    Args:
        keys (Iterable[str]): State dict keys, wrapper prefixes already stripped.

    Returns:
        str: One of :data:`FORMATS`.

    Raises:
        CheckpointError: When no format or more than one matches; the message lists
            what was seen.
    """
    keys = list(keys)
    found = []
    if any(_MAXQ_MARKER.match(k) for k in keys):
        found.append('maxq')
    if any(_TV_MARKER.match(k) for k in keys):
        found.append('torchvision')
    if any(_MMPRE_MARKER.match(k) for k in keys):
        found.append('mmpretrain')
    if len(found) == 1:
        return found[0]
    seen = f'{len(keys)} keys, e.g. {summarize(keys, 8)}'
    if not found:
        raise CheckpointError(
            'this does not look like a ResNet checkpoint in any supported format (maxq: '
            '"layer1.0.convbn1.conv.weight"; torchvision: "layer1.0.conv1.weight"; mmpretrain: '
            f'"backbone.layer1.0.conv1.weight"); found {seen}')
    raise CheckpointError(
        f'ambiguous checkpoint: its keys match several formats ({", ".join(found)}); pass '
        f'--format explicitly; found {seen}')


@dataclass
class MappedWeights:
    """Source weights renamed to MMDetection's ResNet keys.

    Attributes:
        weights (dict): Backbone key -> tensor, in source order.
        masks (dict): Conv weight key (e.g. ``layer1.0.conv1.weight``) -> its stored mask.
        dropped (list): Source keys that are not part of the backbone (classifier, ...).
    """
    weights: Dict[str, torch.Tensor] = field(default_factory=OrderedDict)
    masks: Dict[str, torch.Tensor] = field(default_factory=OrderedDict)
    dropped: List[str] = field(default_factory=list)


def _rename(key: str, rules) -> Optional[str]:
    for pattern, replacement in rules:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return None


def map_to_backbone(state_dict: Mapping[str, torch.Tensor], fmt: str) -> MappedWeights:
    """Rename a (prefix-stripped) state dict to MMDetection ResNet keys.

    Keys of the classifier (``fc.*``, mmpretrain's ``head.*``, ``neck.*``, ...) are dropped.
    Keys that look like backbone keys but are unknown are kept, so that the shape check
    reports them as unexpected instead of hiding them.

    Args:
        state_dict (Mapping[str, Tensor]): Weights, wrapper prefixes stripped.
        fmt (str): One of :data:`FORMATS`.

    Returns:
        MappedWeights: Renamed weights, masks (``maxq`` only) and the dropped keys.
    """
    if fmt not in FORMATS:
        raise CheckpointError(f'unknown format {fmt!r}; choose from {", ".join(FORMATS)}')
    mapped = MappedWeights()
    for key, value in state_dict.items():
        if fmt == 'mmpretrain':
            if not key.startswith('backbone.'):
                mapped.dropped.append(key)
                continue
            key = key[len('backbone.'):]
        if key.startswith('fc.'):
            mapped.dropped.append(key)
            continue
        if fmt == 'maxq':
            target = _rename(key, _MAXQ_MASK_RULES)
            if target is not None:
                mapped.masks[target] = value
                continue
            key = _rename(key, _MAXQ_RULES) or key
        mapped.weights[key] = value
    return mapped


def infer_depth(keys: Iterable[str]) -> int:
    """Infer the ResNet depth from the block keys (MMDetection / torchvision names).

    Args:
        keys (Iterable[str]): Backbone keys.

    Returns:
        int: A key of :data:`RESNET_ARCHS`.

    Raises:
        CheckpointError: When the blocks match no standard ResNet.
    """
    keys = list(keys)
    blocks: Dict[int, set] = {}
    for key in keys:
        hit = _BLOCK_KEY.match(key)
        if hit:
            blocks.setdefault(int(hit.group(1)), set()).add(int(hit.group(2)))
    counts = tuple(len(blocks.get(stage, ())) for stage in range(1, 5))
    kind = 'bottleneck' if any(re.match(r'^layer\d+\.\d+\.conv3\.', k) for k in keys) else 'basic'
    for depth, arch in RESNET_ARCHS.items():
        if arch == (kind, counts):
            return depth
    extra = sorted(s for s in blocks if not 1 <= s <= 4)
    supported = '; '.join(f'{d}: {a[0]} {list(a[1])}' for d, a in RESNET_ARCHS.items())
    raise CheckpointError(
        f'cannot infer the ResNet depth: found {kind} blocks per stage {list(counts)}'
        + (f' and unexpected stages {extra}' if extra else '')
        + f'; supported depths: {supported}')


def infer_widths(weights: Mapping[str, torch.Tensor]) -> Tuple[int, int]:
    """``(stem_channels, base_channels)`` of a ResNet from its weights (MMDetection names).

    ``stem_channels`` is the output width of the stem conv (``conv1.weight``) and
    ``base_channels`` that of the first conv of ``layer1.0`` (the block's ``planes``), as in
    MMDetection's ``ResNet(base_channels=..., stem_channels=...)``. Standard ResNets have 64
    for both; narrow or wide variants are recognised the same way. A key that is missing or
    not a 4-D conv weight leaves the standard width (64), so that the shape check reports it.

    Args:
        weights (Mapping[str, Tensor]): Backbone weights.

    Returns:
        tuple[int, int]: ``(stem_channels, base_channels)``.
    """

    def out_channels(key: str) -> Optional[int]:
        value = weights.get(key)
        if isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[0] > 0:
            return int(value.shape[0])
        return None

    base = out_channels('layer1.0.conv1.weight')
    stem = out_channels('conv1.weight')
    base = base or stem or 64
    return stem or base, base


def resnet_shapes(depth: int, base_channels: int = 64,
                  stem_channels: Optional[int] = None) -> Dict[str, Tuple[int, ...]]:
    """Key -> shape of MMDetection's ``ResNet(depth, base_channels, stem_channels)`` state dict.

    Args:
        depth (int): A key of :data:`RESNET_ARCHS`.
        base_channels (int): Width of ``layer1`` (``planes``; stage ``i`` has
            ``base_channels * 2**i``). Defaults to 64, the standard ResNet.
        stem_channels (int, optional): Width of the stem; ``base_channels`` when None, as in
            MMDetection.

    Returns:
        dict: Every key with its shape, in module order.
    """
    stem_channels = base_channels if stem_channels is None else stem_channels
    kind, counts = RESNET_ARCHS[depth]
    expansion = 4 if kind == 'bottleneck' else 1
    shapes: Dict[str, Tuple[int, ...]] = OrderedDict()

    def conv_bn(conv: str, bn: str, out_ch: int, in_ch: int, k: int):
        shapes[f'{conv}.weight'] = (out_ch, in_ch, k, k)
        for suffix in BN_SUFFIXES:
            shapes[f'{bn}.{suffix}'] = () if suffix == 'num_batches_tracked' else (out_ch, )

    conv_bn('conv1', 'bn1', stem_channels, 3, 7)
    inplanes = stem_channels
    for stage, num_blocks in enumerate(counts, start=1):
        planes = base_channels * 2**(stage - 1)
        for block in range(num_blocks):
            pre = f'layer{stage}.{block}'
            if kind == 'basic':
                convs = [(planes, inplanes, 3), (planes, planes, 3)]
            else:
                convs = [(planes, inplanes, 1), (planes, planes, 3),
                         (planes * expansion, planes, 1)]
            for idx, (out_ch, in_ch, k) in enumerate(convs, start=1):
                conv_bn(f'{pre}.conv{idx}', f'{pre}.bn{idx}', out_ch, in_ch, k)
            if block == 0:  # stride 2 (stages 2-4) or a channel change: always a projection
                if stage > 1 or inplanes != planes * expansion:
                    conv_bn(f'{pre}.downsample.0', f'{pre}.downsample.1', planes * expansion,
                            inplanes, 1)
            inplanes = planes * expansion
    return shapes


def backbone_stage(key: str) -> str:
    """The ResNet stage of a backbone key or module name: ``'stem'`` or ``'layerI'``.

    Args:
        key (str): A name relative to the backbone, e.g. ``'layer2.0.conv1'``.

    Returns:
        str: ``'layerI'`` for a block of stage I, ``'stem'`` for anything else.
    """
    hit = _BLOCK_KEY.match(key)
    return f'layer{hit.group(1)}' if hit else 'stem'

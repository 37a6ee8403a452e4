"""Convert a sparse ImageNet ResNet checkpoint into an MMDetection backbone checkpoint.

The result is ``{'state_dict': {...}, 'meta': {...}}`` with MMDetection ``ResNet`` keys (no
``backbone.`` prefix), which ``model.backbone.init_cfg=dict(type='Pretrained', checkpoint=...)``
loads with no missing or unexpected keys: MMEngine's ``load_checkpoint`` (used by
``PretrainedInit``) takes the weights from the ``'state_dict'`` entry. Narrow or wide ResNets
are recognised from their weights (``meta['base_channels']``, ``meta['stem_channels']``).

Fold rule: for MaxQ fine-tuning import the raw ``W`` (the detector recomputes ``S(W)`` and so
reproduces the ImageNet forward ``W * S(W)``; folding first would apply the soft multipliers
twice), and fold ``W * mask`` only for SR-STE fine-tuning (``W * L`` is a fixed point of the hard
mask) or for a dense / deploy model. ``method`` (``maxq`` / ``srste`` / ``dense``) picks that
default; an explicit ``fold`` overrides it; ``meta`` records ``method`` and ``folded``.

Sparsity rule: a checkpoint *claims* N:M sparsity when it carries MaxQ masks (the ``maxq``
format). Folded, every masked layer that is eligible for M must then have at most N non-zeros
in each block of M input channels, otherwise the conversion stops, names the layers and
suggests the pattern the masks do follow (or ``--no-fold`` for masks saved before sparsity
reached 100%). Imported raw, the stored masks must not follow another N:M pattern than the one
asked for (the same error), and masks that are not N:M yet only warn: MaxQ prunes those layers
from the raw weights. Checkpoints without masks claim nothing: their weights are imported as
they are and the report says how many layers happen to be N:M (a warning is added when the
weights follow another N:M pattern).
"""
import os
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from mmdet_maxq.models.sparsify import METHODS
from mmdet_maxq.sparsity import check_nm, is_nm_eligible, nm_figures
from mmdet_maxq.utils.atomic import check_new_path, write_new_file
from .file_check import checkpoint_file_problem
from .formats import (FORMATS, CheckpointError, backbone_stage, detect_format, extract_state_dict,
                      infer_depth, infer_widths, map_to_backbone, resnet_shapes,
                      strip_wrapper_prefixes, summarize)

STAGES = ('stem', 'layer1', 'layer2', 'layer3', 'layer4')
# What the converted backbone is fine-tuned with (one of the model's METHODS) -> whether stored
# masks are folded by default.
FOLD_BY_METHOD = {'maxq': False, 'srste': True, 'dense': True}
# Block sizes tried when suggesting the N:M pattern that weights actually follow.
CANDIDATE_MS = (4, 8, 16, 32)

Track = Callable[[Sequence[str]], Iterable[str]]


@dataclass
class LayerReport:
    """One conv layer of the converted backbone.

    Attributes:
        name (str): Module name, e.g. ``layer1.0.conv2``.
        stage (str): ``stem`` or ``layerI``.
        shape (tuple): Weight shape ``(O, C, kh, kw)``.
        eligible (bool): ``C % M == 0``.
        nm (bool): Eligible, and at most N non-zeros in every block of M.
        masked (bool): The source carried a mask for it.
        compliance (float, optional): Share of blocks with at most N non-zeros (eligible only)
            in the output weight, or in the stored mask when a masked layer is imported raw.
        mask_nm (bool): Masked and eligible, and the stored mask itself has at most N
            non-zeros in every block of M (what the ImageNet model computed with).
    """
    name: str
    stage: str
    shape: Tuple[int, ...]
    eligible: bool
    nm: bool
    masked: bool
    compliance: Optional[float] = None
    mask_nm: bool = False


@dataclass
class StageReport:
    """Counts of :class:`LayerReport` of one stage (or ``total``)."""
    stage: str
    layers: int = 0
    eligible: int = 0
    nm: int = 0
    masked: int = 0
    mask_nm: int = 0


@dataclass
class ConversionResult:
    """What :func:`convert_state_dict` produced.

    Attributes:
        checkpoint (dict): ``{'state_dict': ..., 'meta': ...}``, ready for ``torch.save``.
        layers (list[LayerReport]): Every conv layer, in module order.
        source_format (str): One of :data:`~.formats.FORMATS`.
        depth (int): ResNet depth.
        decision (str): One line: whether the masks were folded and why.
        dropped (list[str]): Source keys left out (classifier, ...).
        filled (list[str]): Keys the source lacked and that were filled (BN
            ``num_batches_tracked``, set to 0 as PyTorch itself does for old checkpoints).
        warnings (list[str]): Things the user should know that do not stop the conversion.
    """
    checkpoint: dict
    layers: List[LayerReport]
    source_format: str
    depth: int
    decision: str = ''
    dropped: List[str] = field(default_factory=list)
    filled: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    @property
    def stages(self) -> List[StageReport]:
        """Per-stage counts (``stem``, ``layer1`` ... ``layer4``) followed by ``total``."""
        rows = OrderedDict((s, StageReport(s)) for s in STAGES + ('total', ))
        for layer in self.layers:
            for row in (rows[layer.stage], rows['total']):
                row.layers += 1
                row.eligible += layer.eligible
                row.nm += layer.nm
                row.masked += layer.masked
                row.mask_nm += layer.mask_nm
        return list(rows.values())


def suggest_nm(weights: Sequence[torch.Tensor]) -> Optional[Tuple[int, int]]:
    """The sparsest N:M pattern (M in :data:`CANDIDATE_MS`) that all ``weights`` follow.

    Args:
        weights (Sequence[Tensor]): Conv weights; those not eligible for a given M are ignored
            for that M.

    Returns:
        tuple, optional: ``(n, m)`` with the smallest ``n / m`` (then the smallest ``m``), or
        ``None`` when the weights are dense for every candidate M.
    """
    best = None
    for m in CANDIDATE_MS:
        eligible = [w for w in weights if w.dim() == 4 and is_nm_eligible(w, m)]
        if not eligible:
            continue
        n = 0
        for weight in eligible:
            n = max(n, nm_figures(weight, m, m).max_block_nonzeros)
            if n == m:
                break
        if 0 < n < m and (best is None or n / m < best[0] / best[1]):
            best = (n, m)
    return best


def _resolve_format(keys: List[str], fmt: str) -> str:
    if fmt != 'auto' and fmt not in FORMATS:
        raise CheckpointError(f'unknown format {fmt!r}; choose auto or one of {", ".join(FORMATS)}')
    try:
        detected = detect_format(keys)
    except CheckpointError:
        if fmt == 'auto':
            raise
        return fmt  # the key/shape check below reports what does not fit
    if fmt not in ('auto', detected):
        raise CheckpointError(
            f'--format {fmt} was given but the keys look like the {detected} format (e.g. '
            f'{summarize(keys, 3)}); pass --format {detected} or --format auto')
    return detected


def _check_keys(weights: Dict[str, torch.Tensor], masks: Dict[str, torch.Tensor], depth: int,
                fmt: str) -> Tuple[Dict[str, torch.Tensor], List[str], Tuple[int, int]]:
    """Match the renamed weights against ``ResNet(depth)`` of the widths the weights have.

    Returns:
        tuple: The weights in module order, the filled keys, and
        ``(stem_channels, base_channels)``.
    """
    stem, base = infer_widths(weights)
    expected = resnet_shapes(depth, base, stem)
    filled = [k for k in expected
              if k.endswith('.num_batches_tracked') and k not in weights]
    missing = [k for k in expected if k not in weights and k not in filled]
    unexpected = [k for k in weights if k not in expected]
    wrong = [f'{k} {tuple(weights[k].shape)} (expected {expected[k]})'
             for k in expected if k in weights and tuple(weights[k].shape) != expected[k]]
    wrong += [f'mask of {k} {tuple(v.shape)} (expected {expected[k]})'
              for k, v in masks.items() if k in expected and tuple(v.shape) != expected[k]]
    unexpected += [f'mask of {k}' for k in masks if k not in expected or len(expected[k]) != 4]
    problems = []
    if missing:
        problems.append(f'missing keys: {summarize(missing)}')
    if unexpected:
        problems.append(f'unexpected keys: {summarize(unexpected)}')
    if wrong:
        problems.append(f'shape mismatches: {summarize(wrong)}')
    if problems:
        widths = '' if (stem, base) == (64, 64) else \
            f' (stem_channels={stem}, base_channels={base}, read from conv1 and layer1.0.conv1)'
        raise CheckpointError(
            f'the {fmt} checkpoint does not match a ResNet-{depth}{widths} (keys shown with '
            f'MMDetection names): ' + '; '.join(problems))
    ordered = OrderedDict()
    for key in expected:
        ordered[key] = weights[key] if key in weights else torch.tensor(0, dtype=torch.long)
    return ordered, filled, (stem, base)


def _check_finite(tensors: Dict[str, torch.Tensor], what: str) -> None:
    bad = [k for k, v in tensors.items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f'non-finite values (nan/inf) in {len(bad)} {what}: '
                              f'{summarize(bad)}; the checkpoint is damaged or diverged')


def _claim_error(bad: List[LayerReport], weights: List[torch.Tensor], n: int, m: int,
                 fold: bool = True) -> str:
    shown = summarize([f'{r.name} ({r.compliance:.0%} of blocks comply)' for r in bad], 3)
    hint = suggest_nm(weights)
    fixes = []
    if hint is not None and hint != (n, m):
        fixes.append(f'the {"masked weights" if fold else "masks"} follow {hint[0]}:{hint[1]}: '
                     f'pass --n {hint[0]} --m {hint[1]}')
    if fold:
        fixes.append('if the checkpoint was saved before sparsity reached 100%, pass --no-fold '
                     'to import the raw weights and let MaxQ prune them again')
        what = 'folded weights'
    else:
        what = 'stored masks'
    return (f'the checkpoint carries MaxQ masks but the {what} of {len(bad)} masked '
            f'layer(s) are not {n}:{m}: {shown}; ' + '; or '.join(fixes))


def resolve_fold(method: str, fold: Optional[bool]) -> Tuple[bool, bool]:
    """Whether to fold stored masks, from the fine-tuning ``method`` and an explicit ``fold``.

    Args:
        method (str): One of :data:`METHODS`.
        fold (bool, optional): ``--fold`` / ``--no-fold``; None takes the method's default
            (:data:`FOLD_BY_METHOD`: raw for ``maxq``, folded for ``srste`` and ``dense``).

    Returns:
        tuple[bool, bool]: ``(fold, explicit)``.

    Raises:
        CheckpointError: Unknown method.
    """
    if method not in METHODS:
        raise CheckpointError(f'unknown method {method!r}; choose one of {", ".join(METHODS)}')
    if fold is None:
        return FOLD_BY_METHOD[method], False
    return bool(fold), True


def _decision(method: str, fold: bool, explicit: bool, num_masks: int) -> str:
    """The one report line saying whether the masks were folded, and why."""
    if not num_masks:
        return ('no stored masks in the source: imported its weights as they are (nothing to '
                'fold)')
    flag = ' (--fold given)' if fold and explicit else ' (--no-fold given)' if explicit else ''
    if fold:
        why = {'maxq': 'overriding the maxq default: MaxQ fine-tuning will apply its soft '
                       'multipliers again on top of the folded ones',
               'srste': 'for SR-STE fine-tuning W * L is a fixed point of the hard mask',
               'dense': 'a dense or deployed model computes with W * mask directly'}[method]
        return f'folded {num_masks} stored masks into the weights (W * mask){flag}: {why}'
    why = {'maxq': 'MaxQ fine-tuning recomputes S(W), reproducing the ImageNet forward W * S(W); '
                   'folding would apply the soft multipliers twice',
           'srste': 'overriding the srste default: the detector computes W * L(W) from the '
                    'raw weights',
           'dense': 'overriding the dense default: a dense detector computes with the raw W, '
                    'not the W * mask the ImageNet model computed'}[method]
    return f'imported the raw weights W and dropped {num_masks} stored masks{flag}: {why}'


def convert_state_dict(checkpoint: object,
                       n: int,
                       m: int,
                       fmt: str = 'auto',
                       fold: Optional[bool] = None,
                       track: Optional[Track] = None,
                       method: str = 'maxq') -> ConversionResult:
    """Turn a loaded ImageNet ResNet checkpoint into an MMDetection backbone checkpoint.

    Args:
        checkpoint (object): What ``torch.load`` returned (see
            :func:`~.formats.extract_state_dict`).
        n (int): Non-zeros kept per block.
        m (int): Block size along the input channels.
        fmt (str): ``'auto'`` or one of :data:`~.formats.FORMATS`.
        fold (bool, optional): Multiply each conv weight by its stored mask (``maxq``
            format). None (default) takes the default of ``method``.
        track (callable, optional): Wraps the list of conv layer names while they are
            checked, e.g. ``rich.progress.track``.
        method (str): What the backbone is fine-tuned with, one of :data:`METHODS`:
            ``'maxq'`` (default: raw weights, the detector recomputes ``S(W)``), ``'srste'``
            or ``'dense'`` (fold ``W * mask``).

    Returns:
        ConversionResult: The new checkpoint and the per-layer report.

    Raises:
        CheckpointError: Invalid N:M or method, unknown format, keys or shapes that do not
            match the inferred ResNet, non-finite values, or masks that are not N:M (folded)
            or follow another N:M pattern (raw).
    """
    try:
        check_nm(n, m)
    except ValueError as err:
        raise CheckpointError(str(err)) from err
    fold, explicit = resolve_fold(method, fold)
    state = strip_wrapper_prefixes(extract_state_dict(checkpoint))
    fmt = _resolve_format(list(state), fmt)
    mapped = map_to_backbone(state, fmt)
    depth = infer_depth(mapped.weights)
    weights, filled, (stem, base) = _check_keys(mapped.weights, mapped.masks, depth, fmt)
    _check_finite(weights, 'weights')
    _check_finite(mapped.masks, 'masks')
    masks = mapped.masks
    fold = fold and bool(masks)

    convs = [k[:-len('.weight')] for k, v in weights.items()
             if k.endswith('.weight') and v.dim() == 4]
    layers, claimed = [], []
    for name in (track(convs) if track is not None else convs):
        key = f'{name}.weight'
        weight, mask = weights[key], masks.get(key)
        if fold and mask is not None:
            weight = (weight * mask).to(weight.dtype)
            weights[key] = weight
        figures = nm_figures(weight, n, m)
        mask_figures = None if mask is None else nm_figures(mask, n, m)
        if mask is not None:
            claimed.append(weight if fold else mask)
        layers.append(LayerReport(
            name=name, stage=backbone_stage(name), shape=figures.shape,
            eligible=figures.eligible, nm=figures.compliant, masked=mask is not None,
            compliance=(figures if fold or mask is None else mask_figures).compliance,
            mask_nm=mask_figures is not None and mask_figures.compliant))

    warnings = []
    bad = [r for r in layers if r.masked and r.eligible and not (r.nm if fold else r.mask_nm)]
    if fold and bad:
        raise CheckpointError(_claim_error(bad, claimed, n, m))
    if not fold and bad:
        hint = suggest_nm(claimed)
        if hint is not None and hint != (n, m):
            raise CheckpointError(_claim_error(bad, claimed, n, m, fold=False))
        warnings.append(
            f'the stored masks of {len(bad)} layer(s) are not {n}:{m} yet (e.g. '
            f'{summarize([r.name for r in bad], 3)}; saved before sparsity reached 100%?): the '
            'ImageNet model did not compute with N:M weights there; MaxQ prunes them from the '
            'raw weights')
    soft = any(bool(((v != 0) & (v != 1)).any()) for v in masks.values())
    if masks and explicit and fold and method == 'maxq' and soft:
        warnings.append('--fold with --method maxq: the MaxQ hooks recompute S on the folded '
                        'weights and multiply by it again, so the first forward is not the '
                        "ImageNet model's; drop --fold to import the raw weights")
    elif masks and explicit and not fold and method in ('srste', 'dense') and soft:
        warnings.append(f'--no-fold with --method {method}: the stored masks are soft MaxQ masks '
                        '(values in [1, 3]) that the detector will not apply; drop --no-fold to '
                        'fold them')
    eligible = [r for r in layers if r.eligible]
    if not masks and eligible and not all(r.nm for r in eligible):
        hint = suggest_nm([weights[f'{r.name}.weight'] for r in layers if r.stage != 'stem'])
        if hint is not None:
            warnings.append(f'the weights follow {hint[0]}:{hint[1]} sparsity, not the requested '
                            f'{n}:{m}; check --n/--m')
    if (stem, base) != (64, 64):
        warnings.append(f'a non-standard ResNet width: set base_channels={base}'
                        + (f', stem_channels={stem}' if stem != base else '')
                        + ' in the backbone config, or loading reports shape mismatches')

    decision = _decision(method, fold, explicit, len(masks))
    meta = dict(
        n=n, m=m, method=method, source_format=fmt, depth=depth, base_channels=base,
        stem_channels=stem, folded=fold, fold_decision=decision, masked_layers=len(masks),
        nm_sparse=bool(eligible) and all(r.nm for r in eligible),
        nm_layers=sum(r.nm for r in layers), eligible_layers=len(eligible),
        converter='mmdet_maxq.checkpoint.convert')
    return ConversionResult(
        checkpoint={'state_dict': weights, 'meta': meta}, layers=layers, source_format=fmt,
        depth=depth, decision=decision, dropped=mapped.dropped, filled=filled,
        warnings=warnings)


def load_checkpoint_file(path: str) -> object:
    """``torch.load(path, map_location='cpu', weights_only=True)`` with clear errors.

    Args:
        path (str): Checkpoint file.

    Returns:
        object: The loaded checkpoint.

    Raises:
        CheckpointError: The file is missing, unreadable, corrupt or truncated, or holds
            pickled objects that ``weights_only`` loading refuses.
    """
    problem = checkpoint_file_problem(path)
    if problem is not None:
        raise CheckpointError(f'cannot read checkpoint {path}: it {problem}')
    from .safe_load import allow_mmengine_checkpoints

    allow_mmengine_checkpoints()  # mmpretrain checkpoints saved by MMEngine hold a HistoryBuffer
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError,
            zipfile.BadZipFile) as err:
        text, detail = str(err), _load_error_detail(err)
        if 'Unsupported global' in text:
            raise CheckpointError(
                f'cannot read checkpoint {path}: it holds pickled objects that safe loading '
                f'(weights_only=True) refuses ({detail}); re-save only its state dict') from err
        raise CheckpointError(f'cannot read checkpoint {path}: {detail} (corrupt or truncated?)'
                              ) from err


def _load_error_detail(err: BaseException) -> str:
    """The informative line of a ``torch.load`` error (its messages span many lines)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for idx, line in enumerate(lines):
        if line.startswith('WeightsUnpickler error:'):
            rest = line[len('WeightsUnpickler error:'):].strip()
            return rest or (lines[idx + 1] if idx + 1 < len(lines) else line)
    if not lines:
        return f'{type(err).__name__} (empty or cut file)'
    first = lines[0].split('. ')[0]  # torch appends paragraphs of advice to its messages
    return first if len(first) > 8 else f'{type(err).__name__}: {first}'


def check_output_path(path: str, overwrite: bool) -> None:
    """Refuse a folder, and an existing file unless ``overwrite``.

    Args:
        path (str): The output checkpoint.
        overwrite (bool): Whether replacing an existing file was asked for.

    Raises:
        CheckpointError: ``path`` is a directory.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    if os.path.isdir(path):
        raise CheckpointError(f'output {path} is a directory; pass a file name such as '
                              f'{os.path.join(path, "backbone.pth")}')
    check_new_path(path, overwrite)


def save_checkpoint_atomic(checkpoint: dict, path: str, overwrite: bool = False) -> None:
    """``torch.save`` to a new file ``path``, complete or not at all (see ``write_new_file``).

    Args:
        checkpoint (dict): What to save.
        path (str): Destination; its folder is created when missing.
        overwrite (bool): Replace an existing file. Defaults to False.
    """
    check_output_path(path, overwrite)
    write_new_file(path, lambda f: torch.save(checkpoint, f), overwrite=overwrite)


def convert_checkpoint(src: str,
                       dst: str,
                       n: int,
                       m: int,
                       fmt: str = 'auto',
                       fold: Optional[bool] = None,
                       overwrite: bool = False,
                       track: Optional[Track] = None,
                       method: str = 'maxq') -> ConversionResult:
    """Read ``src``, convert it (:func:`convert_state_dict`) and write ``dst`` atomically.

    Every check runs before anything is written; on error ``dst`` is left as it was.

    Args:
        src (str): Source checkpoint.
        dst (str): Output checkpoint.
        n (int): Non-zeros kept per block.
        m (int): Block size.
        fmt (str): ``'auto'`` or one of :data:`~.formats.FORMATS`.
        fold (bool, optional): Fold stored masks into the weights; None takes the default
            of ``method``.
        overwrite (bool): Replace an existing ``dst``.
        track (callable, optional): Progress wrapper, see :func:`convert_state_dict`.
        method (str): ``'maxq'`` (default, raw weights), ``'srste'`` or ``'dense'`` (fold).

    Returns:
        ConversionResult: The report (``meta['source']`` is the source file name).
    """
    try:
        check_nm(n, m)
    except ValueError as err:
        raise CheckpointError(str(err)) from err
    resolve_fold(method, fold)
    check_output_path(dst, overwrite)
    result = convert_state_dict(load_checkpoint_file(src), n, m, fmt, fold, track, method)
    result.checkpoint['meta']['source'] = os.path.basename(src)
    save_checkpoint_atomic(result.checkpoint, dst, overwrite)
    return result

"""Checks of an exported plain model against the sparse model it was folded from.

Three checks, each a :class:`Check` in a :class:`VerificationReport`:

(a) ``nm``: every conv and linear layer that was sparse is exactly N:M in the exported model
    (:func:`check_nm_layers`);
(b) ``load``: in a fresh interpreter where ``import mmdet_maxq`` fails, MMDetection (a
    detector) or mmpretrain (a classifier) alone reads the plain config (its ``custom_imports``
    included), builds the model from its own registry and loads the written checkpoint with
    ``torch.load(weights_only=True)`` (no allow-list) and strict key matching
    (:func:`run_plain_process`);
(c) ``predictions``: that process's predictions on sample images equal the sparse model's
    eval predictions: same labels, boxes and scores within the tolerance
    (:func:`compare_predictions`, samples from :func:`sample_batches`).

How (c) stays right on a GPU. Both models run on the same device (the plain process is started
on the sparse model's device), with TF32 off and cuDNN deterministic in both
(:func:`~mmdet_maxq.deploy.plain_process.exact_float32`): TF32 convolutions, on by default on
Ampere and later GPUs, round to a 10-bit mantissa, and a CPU-against-GPU comparison differs by
summation order alone. What is left is float32 rounding, which grows with the magnitude of a
value: one float32 step at a 1500 px box coordinate is 1.2e-4 px, above any fixed absolute
tolerance of that size. So the tolerance ``tol`` is relative: box coordinates may differ by
``tol * max(1, largest |coordinate| of the image)``, features by ``tol * max(1, max |feature|)``
and scores (probabilities in [0, 1]) by ``tol``. With the default 1e-4 a 1333 px box may move
0.13 px, while any real fold error (a missing mask, a scaled weight) moves it by far more.
"""
import copy
import os.path as osp
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

from mmdet_maxq.sparsity import nm_figures
from mmdet_maxq.utils.config_utils import pipeline_test_scale
from . import plain_process
from .kinds import DETECTOR, ModelKind
from .plain_process import exact_float32, run_batch

# A progress wrapper: ``progress(items, description)`` yields the items.
Progress = Callable[[Sequence, str], Iterable]
# Share of mask pixels allowed to differ (a logit sitting exactly at the 0.5 threshold).
MASK_PIXEL_TOLERANCE = 1e-3
# The default relative tolerance of check (c) (see the module docstring).
DEFAULT_TOLERANCE = 1e-4
# How the report names each package.
PACKAGE_TITLES = dict(mmdet='MMDetection', mmpretrain='mmpretrain')


def no_progress(items: Sequence, description: str) -> Iterable:
    """The identity progress wrapper."""
    return items


@dataclass
class Check:
    """One verification check.

    Attributes:
        key (str): ``'nm'``, ``'load'`` or ``'predictions'``.
        title (str): What was checked, for the output table.
        passed (bool): Its outcome.
        detail (str): Figures or the reason it failed.
    """
    key: str
    title: str
    passed: bool
    detail: str


@dataclass
class LayerCheck:
    """N:M compliance of one folded conv or linear layer of the exported model."""
    name: str
    shape: Tuple[int, ...]
    sparsity: float
    compliant: bool


@dataclass
class ImageCheck:
    """The comparison of one sample image's predictions.

    Attributes:
        image (str): Image path or ``random #i``.
        detections (int): Detections of the sparse model (1 for a classifier).
        plain_detections (int): Detections of the plain model.
        labels_equal (bool): Same count and labels (a classifier: the predicted class), in
            order.
        box_diff (float): Max box coordinate difference relative to ``max(1, largest
            |coordinate|)`` of the sparse model's boxes (0 without boxes).
        score_diff (float): Max absolute score difference (a classifier: over all classes).
        feature_diff (float): Max absolute difference of the ``extract_feat`` outputs
            (backbone + neck) relative to ``max(1, max |feature|)``.
        mask_diff (float, optional): Share of differing mask pixels (None without masks).
        passed (bool): Everything within tolerance.
    """
    image: str
    detections: int
    plain_detections: int
    labels_equal: bool
    box_diff: float
    score_diff: float
    feature_diff: float
    mask_diff: Optional[float]
    passed: bool


@dataclass
class VerificationReport:
    """Everything verified about one export."""
    checks: List[Check] = field(default_factory=list)
    layers: List[LayerCheck] = field(default_factory=list)
    images: List[ImageCheck] = field(default_factory=list)
    image_source: str = ''
    kind: str = DETECTOR.name

    @property
    def passed(self) -> bool:
        """True when every check ran and passed."""
        return bool(self.checks) and all(check.passed for check in self.checks)

    def failures(self) -> List[Check]:
        """The checks that failed."""
        return [check for check in self.checks if not check.passed]


def check_nm_layers(state_dict: Dict[str, torch.Tensor], names: Sequence[str], n: int,
                    m: int) -> List[LayerCheck]:
    """N:M compliance of the named layers in an exported state dict (their ``weight``).

    Args:
        state_dict (dict): The exported checkpoint's state dict.
        names (Sequence[str]): Module names of the convs and linear layers that were sparse.
        n (int): N of N:M.
        m (int): M of N:M.

    Returns:
        list[LayerCheck]: One entry per name (figures from
        :func:`~mmdet_maxq.sparsity.nm_figures`). A name without a 4-D conv or 2-D linear
        weight, one whose input channels ``m`` does not divide, and one that still has a
        ``mask`` count as not compliant.
    """
    rows = []
    for name in names:
        weight = state_dict.get(name + '.weight')
        if not isinstance(weight, torch.Tensor) or weight.dim() not in (2, 4) \
                or name + '.mask' in state_dict:
            rows.append(LayerCheck(name, (), 0.0, False))
            continue
        figures = nm_figures(weight, n, m)
        rows.append(LayerCheck(name, figures.shape, figures.sparsity, figures.compliant))
    return rows


def plain_load_title(package: str) -> str:
    """The title of check (b) for the plain model's package (``'mmdet'``, ``'mmpretrain'``)."""
    return (f'plain {PACKAGE_TITLES.get(package, package)} builds the config and loads the '
            'checkpoint (strict)')


def run_plain_process(config_path: str, checkpoint_path: str, batches: Sequence[dict],
                      package: str = DETECTOR.package, device: str = 'cpu',
                      timeout: float = 1800) -> Tuple[Optional[List], Check]:
    """Run the exported files through :mod:`.plain_process` in a fresh interpreter.

    Args:
        config_path (str): The written plain config.
        checkpoint_path (str): The written checkpoint.
        batches (Sequence[dict]): Sample batches (from :func:`sample_batches`).
        package (str): The package whose registry builds the plain model. Defaults to
            ``'mmdet'``.
        device (str): Where the plain model runs: the sparse model's device, so that check (c)
            compares like with like. Defaults to ``'cpu'``.
        timeout (float): Seconds before the process is stopped. Defaults to 1800.

    Returns:
        tuple: ``(per-batch (predictions, features) or None, the 'load' Check)``.
    """
    title = plain_load_title(package)
    with tempfile.TemporaryDirectory(prefix='mmdet_maxq_verify_') as tmp:
        batches_path = osp.join(tmp, 'batches.pth')
        result_path = osp.join(tmp, 'result.pth')
        torch.save(list(batches), batches_path)
        # -I: no PYTHONPATH, no user site, no script folder on sys.path: a clean interpreter.
        proc = subprocess.run(
            [sys.executable, '-I', plain_process.__file__, config_path, checkpoint_path,
             batches_path, result_path, package, str(device)], capture_output=True, text=True,
            timeout=timeout)
        if proc.returncode != 0 or not osp.isfile(result_path):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return None, Check('load', title, False,
                               f'the process exited {proc.returncode}: {" | ".join(tail)}')
        result = torch.load(result_path, weights_only=False)  # our own child wrote it
    if not result['ok']:
        return None, Check('load', title, False,
                           f'failed at {result["stage"]}: {result["error"]}')
    return result['outputs'], Check(
        'load', title, True,
        f'{result["model_type"]} from {result["registry"]}, {result["keys"]} keys matched '
        f'exactly; in a separate process on {device} where mmdet_maxq cannot be imported, '
        'torch.load(weights_only=True) with no allow-list')


def _dataset_available(dataset: dict) -> bool:
    root = dataset.get('data_root') or ''
    ann = dataset.get('ann_file') or ''
    if root and not osp.isdir(root):
        return False
    if ann and not osp.isfile(ann if osp.isabs(ann) else osp.join(root, ann)):
        return False
    return bool(root or ann)


def sample_batches(cfg: Config, num_images: int, kind: ModelKind = DETECTOR,
                   seed: int = 0) -> Tuple[str, List[dict]]:
    """``num_images`` single-image batches for ``test_step``.

    They come from the config's test dataset when its data root and annotation file exist,
    else they are deterministic random images of the test pipeline's size
    (:func:`~mmdet_maxq.utils.config_utils.pipeline_test_scale`).

    Args:
        cfg (Config): The (sparse or plain) config.
        num_images (int): How many images (fewer when the dataset is smaller).
        kind (ModelKind): Whose dataset registry and data samples to use. Defaults to
            :data:`~mmdet_maxq.deploy.kinds.DETECTOR`.
        seed (int): Seed of the random images. Defaults to 0.

    Returns:
        tuple: ``(description of the source, list of batches)``.
    """
    dataset_cfg = (cfg.get('test_dataloader') or {}).get('dataset')
    if dataset_cfg and _dataset_available(dataset_cfg):
        init_default_scope(cfg.get('default_scope', kind.package))
        dataset = kind.registry('DATASETS').build(copy.deepcopy(dataset_cfg))
        count = min(num_images, len(dataset))
        batches = [pseudo_collate([dataset[i]]) for i in range(count)]
        return f'{count} images of the test dataset ({dataset_cfg.get("data_root", "")})', batches
    data_sample = kind.load('data_sample')
    h, w = pipeline_test_scale(cfg)
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for i in range(num_images):
        image = torch.randint(0, 256, (3, h, w), generator=generator, dtype=torch.uint8)
        sample = data_sample(metainfo=dict(img_id=i, img_path=f'random #{i}', ori_shape=(h, w),
                                           img_shape=(h, w), scale_factor=(1.0, 1.0)))
        batches.append(dict(inputs=[image], data_samples=[sample]))
    return (f'{num_images} deterministic random {h}x{w} images (test data root not found)',
            batches)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def _relative_diff(ref: torch.Tensor, out: torch.Tensor) -> float:
    """Max ``|ref - out|`` over ``max(1, max |ref|)``: float32 rounding grows with magnitude."""
    if not ref.numel():
        return 0.0
    return _max_diff(ref, out) / max(1.0, float(ref.float().abs().max()))


def compare_one(name: str, ref: Dict[str, torch.Tensor], out: Dict[str, torch.Tensor],
                ref_feats: List[torch.Tensor], out_feats: List[torch.Tensor],
                tol: float = DEFAULT_TOLERANCE) -> ImageCheck:
    """Compare the sparse model's (``ref``) and the plain model's (``out``) outputs.

    Args:
        name (str): Image name for the report.
        ref, out (dict): ``scores`` and ``labels`` of each model, and ``bboxes`` (and
            ``masks``) for a detector.
        ref_feats, out_feats (list[Tensor]): ``extract_feat`` outputs of each model.
        tol (float): Relative tolerance (see the module docstring): on boxes over ``max(1,
            largest |coordinate|)``, on features over ``max(1, max |feature|)``, on scores as
            they are. Defaults to :data:`DEFAULT_TOLERANCE`.

    Returns:
        ImageCheck: The figures and whether they are within tolerance.
    """
    same_count = len(ref['labels']) == len(out['labels'])
    labels_equal = same_count and torch.equal(ref['labels'], out['labels'])
    if ('bboxes' in ref) != ('bboxes' in out):
        box_diff = float('inf')
    elif 'bboxes' in ref:
        box_diff = _relative_diff(ref['bboxes'], out['bboxes']) if same_count else float('inf')
    else:
        box_diff = 0.0
    score_diff = _max_diff(ref['scores'], out['scores']) \
        if ref['scores'].shape == out['scores'].shape else float('inf')
    feature_diff = 0.0
    if len(ref_feats) != len(out_feats) or any(a.shape != b.shape
                                               for a, b in zip(ref_feats, out_feats)):
        feature_diff = float('inf')
    else:
        for a, b in zip(ref_feats, out_feats):
            feature_diff = max(feature_diff, _relative_diff(a, b))
    mask_diff = None
    masks_ok = True
    if 'masks' in ref or 'masks' in out:
        if same_count and 'masks' in ref and 'masks' in out and \
                ref['masks'].shape == out['masks'].shape:
            mask_diff = float((ref['masks'] != out['masks']).float().mean()) \
                if ref['masks'].numel() else 0.0
            masks_ok = mask_diff <= MASK_PIXEL_TOLERANCE
        else:
            mask_diff, masks_ok = 1.0, False
    passed = (labels_equal and box_diff <= tol and score_diff <= tol
              and feature_diff <= tol and masks_ok)
    return ImageCheck(name, len(ref['labels']), len(out['labels']), labels_equal, box_diff,
                      score_diff, feature_diff, mask_diff, passed)


def compare_predictions(reference: nn.Module, batches: Sequence[dict], plain_outputs: List,
                        tol: float = DEFAULT_TOLERANCE, progress: Progress = no_progress
                        ) -> Tuple[List[ImageCheck], Check]:
    """Run the sparse model on every batch (eval mode, TF32 off) and compare with the plain
    outputs.

    Args:
        reference (nn.Module): The sparse model (masks at preserve 0), on the device the plain
            outputs were computed on.
        batches (Sequence[dict]): Single-image batches from :func:`sample_batches`.
        plain_outputs (list): ``(predictions, features)`` of the plain model per batch
            (:func:`run_plain_process`).
        tol (float): Relative tolerance (:func:`compare_one`). Defaults to
            :data:`DEFAULT_TOLERANCE`.
        progress (callable): ``progress(items, description)``.

    Returns:
        tuple: ``(per-image checks, the 'predictions' Check)``.
    """
    reference.eval()
    rows = []
    pairs = list(zip(batches, plain_outputs))
    with exact_float32():
        for batch, (out, out_feats) in progress(pairs, 'verifying predictions'):
            name = str(batch['data_samples'][0].metainfo.get('img_path', len(rows)))
            ref, ref_feats = run_batch(reference, batch)
            rows.append(compare_one(osp.basename(name), ref, out, ref_feats, out_feats, tol))
    title = f'plain predictions equal the sparse model\'s (relative tol {tol:g})'
    if not rows:
        return rows, Check('predictions', title, False, 'no sample image to compare')
    bad = [row.image for row in rows if not row.passed]
    if any('bboxes' in out for out, _ in plain_outputs):
        detail = (f'{len(rows)} images, {sum(r.detections for r in rows)} detections; max rel. '
                  f'|box| diff {max(r.box_diff for r in rows):.2e}, ')
    else:
        detail = f'{len(rows)} images, same class on {sum(r.labels_equal for r in rows)}; '
    detail += (f'max |score| diff {max(r.score_diff for r in rows):.2e}, max rel. feature diff '
               f'{max(r.feature_diff for r in rows):.2e}')
    if bad:
        detail = f'differ on {", ".join(bad)}; ' + detail
    return rows, Check('predictions', title, not bad, detail)

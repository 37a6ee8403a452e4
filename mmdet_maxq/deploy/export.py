"""Fold a trained :class:`SparseDetector` into the plain detector and write it, verified.

What :func:`export_verified` writes for ``OUT`` (e.g. ``deploy/model.pth``):

* ``OUT``: ``{'state_dict': ..., 'meta': ...}``, the plain detector's state dict (no
  ``architecture.`` prefix, no ``mask`` buffers), every sparse conv replaced by a plain conv of
  weight ``W * S`` with ``S`` recomputed at preserve rate 0 (so a checkpoint saved mid-schedule
  still gives an exact N:M model). ``meta`` holds the sparsity settings, the folded layers,
  the source checkpoint, the versions and, when the source had it, ``dataset_meta``.
* ``OUT`` with ``.py`` instead of its extension (``deploy/model.py``): the plain detector
  config, i.e. the config with ``model = model.architecture``; everything else is kept
  (``custom_imports`` too) except the hooks that need a ``SparseDetector``.

Both are written to temporary files in the destination folder, verified from there
(:mod:`mmdet_maxq.deploy.verify`) and renamed into place only when every check passes.
"""
import copy
import os
import os.path as osp
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config

from mmdet_maxq.models.sparse_detector import SparseDetector
from mmdet_maxq.models.sparsify import sparse_convs
from mmdet_maxq.version import __version__
from .verify import (Check, Progress, VerificationReport, build_plain_model, check_nm_layers,
                     compare_predictions, no_progress, sample_batches)

# Hooks that only work on a SparseDetector; the plain config leaves them out.
SPARSITY_HOOKS = ('SparsityScheduleHook', 'SparsityLoggerHook', 'SRSTEDecayHook')


class DeployError(ValueError):
    """A model, config or output path that cannot be exported."""


class VerificationError(RuntimeError):
    """The exported model failed verification; nothing was written.

    Attributes:
        report (VerificationReport): What was checked.
    """

    def __init__(self, report: VerificationReport):
        failed = '; '.join(f'{c.key}: {c.detail}' for c in report.failures())
        super().__init__(f'verification failed, nothing written ({failed})')
        self.report = report


@dataclass
class ExportResult:
    """What :func:`export_verified` wrote and verified.

    Attributes:
        checkpoint (str): The written checkpoint.
        config (str): The written plain config.
        folded (list[str]): Names of the folded convs.
        remasked (list[str]): Folded convs whose mask at preserve 0 differs from the mask the
            loaded model carried (a checkpoint saved mid-schedule, or masks computed before the
            last optimizer step).
        report (VerificationReport): The checks.
    """
    checkpoint: str
    config: str
    folded: List[str]
    remasked: List[str]
    report: VerificationReport


def deploy_paths(out: str) -> Tuple[str, str]:
    """The checkpoint path and the config path written beside it.

    Args:
        out (str): The checkpoint path, e.g. ``deploy/model.pth``.

    Returns:
        tuple: ``(out, config path)``, e.g. ``('deploy/model.pth', 'deploy/model.py')``.
    """
    root, ext = osp.splitext(out)
    if ext == '.py' or not osp.basename(root):
        raise DeployError(f'output {out!r} must be a checkpoint file path such as '
                          'deploy/model.pth (the config is written beside it as .py)')
    return out, root + '.py'


def _short_type(value) -> str:
    if isinstance(value, type):
        return value.__name__
    return str(value).split('.')[-1]


def check_sparse_config(cfg: Config) -> None:
    """Raise :class:`DeployError` unless ``cfg.model`` is a ``SparseDetector`` config."""
    model = cfg.get('model')
    kind = _short_type(model.get('type')) if isinstance(model, dict) else None
    if kind != 'SparseDetector' or not isinstance(model.get('architecture'), dict):
        raise DeployError(
            f'the config\'s model is {kind or "missing"}, not a SparseDetector with an '
            'architecture dict; deploy.py folds a sparse model (model=dict(type='
            '"SparseDetector", architecture=..., sparsity=...)); a plain detector needs no export')


def plain_config(cfg: Config) -> Config:
    """The config of the plain detector: ``model.architecture`` as ``model``.

    Everything else is kept (``custom_imports`` too, so the checkpoint-loading fix is active),
    except the custom hooks that need a ``SparseDetector`` (:data:`SPARSITY_HOOKS`).

    Args:
        cfg (Config): The sparse config.

    Returns:
        Config: A new config.
    """
    check_sparse_config(cfg)
    data = copy.deepcopy(cfg.to_dict())
    data['model'] = data['model']['architecture']
    hooks = data.get('custom_hooks')
    if hooks:
        data['custom_hooks'] = [h for h in hooks
                                if _short_type(h.get('type')) not in SPARSITY_HOOKS]
    return Config(data)


@torch.no_grad()
def fold_sparse_detector(model: SparseDetector, progress: Progress = no_progress
                         ) -> Tuple[nn.Module, List[str], List[str]]:
    """Recompute every mask at preserve 0 and fold it into a plain copy of the detector.

    The masks of ``model`` itself are recomputed (``update_mask(0.0, force=True)``), so
    ``model`` afterwards is the sparse model the export must equal.

    Args:
        model (SparseDetector): The trained sparse model.
        progress (callable): ``progress(items, description)``.

    Returns:
        tuple: ``(plain detector, names of the folded convs, names of those whose mask
        changed)``; the detector is a deep copy of ``model.architecture`` with every
        :class:`SparseConv2d` replaced by ``to_dense()``.
    """
    if not isinstance(model, SparseDetector):
        raise DeployError(f'expected a SparseDetector, got {type(model).__name__}')
    plain = copy.deepcopy(model.architecture)
    layers = model.named_sparse_layers()
    remasked = []
    for name, conv in progress(layers, 'folding masks'):
        before = None if conv.mask_stale else conv.mask.clone()
        try:
            conv.update_mask(0.0, force=True)
        except ValueError as err:
            raise DeployError(f'cannot fold {name}: {err}') from None
        if before is None or not torch.equal(before, conv.mask):
            remasked.append(name)
        parent_name, _, child = name.rpartition('.')
        parent = plain.get_submodule(parent_name) if parent_name else plain
        setattr(parent, child, conv.to_dense())
    left = [name for name, _ in sparse_convs(plain)]
    if left:
        raise DeployError(f'sparse convs left after folding: {left}')
    return plain, [name for name, _ in layers], remasked


def _checkpoint(plain: nn.Module, model: SparseDetector, folded: List[str], source: str,
                source_meta: Optional[Dict]) -> Dict:
    import mmdet

    settings = model.sparsity
    meta = dict(
        mmdet_maxq_version=__version__,
        mmdet_version=mmdet.__version__,
        source_checkpoint=osp.abspath(source) if source else None,
        sparsity=dict(method=settings.method, n=settings.n, m=settings.m, tau=settings.tau,
                      preserve=0.0, folded_layers=list(folded)),
        note='N:M masks folded into the weights (W * S at preserve 0) by mmdet_maxq '
             'tools/deploy.py; load with the plain detector config written beside it')
    if source_meta and source_meta.get('dataset_meta') is not None:
        meta['dataset_meta'] = source_meta['dataset_meta']
    state = OrderedDict((key, value.detach().cpu().clone())
                        for key, value in plain.state_dict().items())
    return dict(state_dict=state, meta=meta)


def _temp_path(folder: str, name: str, suffix: str) -> str:
    fd, path = tempfile.mkstemp(prefix=f'.{name}.', suffix=suffix, dir=folder)
    os.close(fd)
    return path


def verify_export(model: SparseDetector, config_path: str, checkpoint_path: str,
                  folded: List[str], sample_cfg: Config, num_images: int = 4,
                  atol: float = 1e-4, device: str = 'cpu',
                  progress: Progress = no_progress) -> VerificationReport:
    """Run checks (a), (b) and (c) on written files (see :mod:`mmdet_maxq.deploy.verify`).

    Args:
        model (SparseDetector): The sparse model, masks at preserve 0.
        config_path (str): The plain config file.
        checkpoint_path (str): The plain checkpoint file.
        folded (list[str]): Names of the folded convs.
        sample_cfg (Config): Config whose test dataloader gives the sample images.
        num_images (int): Sample images. Defaults to 4.
        atol (float): Tolerance on boxes and scores. Defaults to 1e-4.
        device (str): Device of both models. Defaults to ``'cpu'``.
        progress (callable): ``progress(items, description)``.

    Returns:
        VerificationReport: The checks; (a) and (c) fail without running when (b) fails.
    """
    report = VerificationReport()
    settings = model.sparsity
    plain, load_check = build_plain_model(config_path, checkpoint_path, device)
    nm_title = f'every folded conv is exactly {settings.n}:{settings.m}'
    if plain is None:
        report.checks += [Check('nm', nm_title, False, 'not run: the model did not load'),
                          load_check,
                          Check('predictions', 'predictions', False, 'not run')]
        return report
    report.layers = check_nm_layers(plain, folded, settings.n, settings.m)
    bad = [row.name for row in report.layers if not row.compliant]
    if not folded:
        detail = f'no sparse conv to fold (method={settings.method})'
    else:
        detail = f'{len(folded) - len(bad)} of {len(folded)} folded convs exactly ' \
                 f'{settings.n}:{settings.m}'
        if bad:
            detail += f'; not: {", ".join(bad[:5])}' + (' ...' if len(bad) > 5 else '')
    report.checks.append(Check('nm', nm_title, not bad, detail))
    report.checks.append(load_check)
    report.image_source, batches = sample_batches(sample_cfg, num_images)
    report.images, check = compare_predictions(model, plain, batches, atol, progress)
    report.checks.append(check)
    return report


def export_verified(model: SparseDetector, cfg: Config, out: str, source_checkpoint: str = '',
                    source_meta: Optional[Dict] = None, num_images: int = 4,
                    atol: float = 1e-4, overwrite: bool = False, device: str = 'cpu',
                    progress: Progress = no_progress) -> ExportResult:
    """Fold ``model``, write the plain checkpoint and config, verify them, move them to ``out``.

    Args:
        model (SparseDetector): The trained sparse model (weights loaded), on ``device``.
        cfg (Config): Its config (after any overrides).
        out (str): The checkpoint path; the config goes beside it (:func:`deploy_paths`).
        source_checkpoint (str): Path of the checkpoint ``model`` was loaded from (for meta).
        source_meta (dict, optional): That checkpoint's ``meta`` (``dataset_meta`` is kept).
        num_images (int): Sample images of check (c). Defaults to 4.
        atol (float): Tolerance on boxes and scores. Defaults to 1e-4.
        overwrite (bool): Replace existing files. Defaults to False.
        device (str): Device of the verification. Defaults to ``'cpu'``.
        progress (callable): ``progress(items, description)``.

    Returns:
        ExportResult: The written paths and the verification report.

    Raises:
        DeployError: A bad config, model or output path (nothing written).
        FileExistsError: ``out`` or its config exists and ``overwrite`` is False.
        VerificationError: A check failed; nothing is left at ``out`` or its config path.
    """
    ckpt_path, cfg_path = deploy_paths(out)
    for path in (ckpt_path, cfg_path):
        if osp.exists(path) and not overwrite:
            raise FileExistsError(f'{path} exists; pass --overwrite to replace it')
    if num_images < 1:
        raise DeployError(f'num_images must be >= 1, got {num_images}')
    plain_cfg = plain_config(cfg)
    model.eval()
    plain, folded, remasked = fold_sparse_detector(model, progress)
    bad = [key for key, value in plain.state_dict().items()
           if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        raise DeployError(f'non-finite values in {len(bad)} tensors of the model (e.g. {bad[0]}); '
                          'export a checkpoint from before training diverged')
    folder = osp.dirname(osp.abspath(ckpt_path))
    made_folder = not osp.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    tmp_ckpt = _temp_path(folder, osp.basename(ckpt_path), '.tmp')
    tmp_cfg = _temp_path(folder, osp.basename(cfg_path), '.py')
    done = False
    try:
        torch.save(_checkpoint(plain, model, folded, source_checkpoint, source_meta), tmp_ckpt)
        plain_cfg.dump(tmp_cfg)
        del plain
        report = verify_export(model, tmp_cfg, tmp_ckpt, folded, cfg, num_images, atol, device,
                               progress)
        if not report.passed:
            raise VerificationError(report)
        for tmp in (tmp_ckpt, tmp_cfg):
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp_cfg, cfg_path)
        os.replace(tmp_ckpt, ckpt_path)
        done = True
    finally:
        if not done:
            for tmp in (tmp_ckpt, tmp_cfg):
                if osp.exists(tmp):
                    os.unlink(tmp)
            if made_folder and not os.listdir(folder):
                os.rmdir(folder)
    return ExportResult(ckpt_path, cfg_path, folded, remasked, report)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

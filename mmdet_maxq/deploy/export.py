"""Fold a trained sparse detector into the plain detector and write it, verified.

What :func:`export_verified` writes for ``OUT`` (e.g. ``deploy/model.pth``):

* ``OUT``: ``{'state_dict': ..., 'meta': ...}``, the plain detector's state dict (its own keys,
  no ``mask`` buffers), every sparse conv replaced by a plain conv of weight ``W * S`` with
  ``S`` recomputed at preserve rate 0 (so a checkpoint saved mid-schedule still gives an exact
  N:M model). ``meta`` holds only strings, numbers, lists and dicts (the sparsity settings,
  the folded layers, the source checkpoint, the versions and, when the source had it,
  ``dataset_meta``), so ``torch.load(weights_only=True)`` reads the file with no allow-list.
* ``OUT`` with ``.py`` instead of its extension (``deploy/model.py``): the plain detector
  config: every ``SparseDetector`` model config back to its detector type, without the
  ``custom_imports`` of this package, the hooks of this package or its DDP wrapper. A server
  with MMDetection alone runs it.

Both are written to temporary files in the destination folder, verified from there
(:mod:`mmdet_maxq.deploy.verify`) and renamed into place only when every check passes.
"""
import copy
import os
import os.path as osp
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config

from mmdet_maxq.engine.hooks import __all__ as HOOK_NAMES
from mmdet_maxq.models.sparsify import SETTINGS_ATTR, sparse_convs, sparsity_settings
from mmdet_maxq.utils.atomic import temp_file_beside
from mmdet_maxq.version import __version__
from .verify import (Check, Progress, VerificationReport, check_nm_layers, compare_predictions,
                     no_progress, run_plain_process, sample_batches)

# This package's hooks (every one it registers); the plain config leaves them out.
PACKAGE_HOOKS = tuple(HOOK_NAMES)
PACKAGE = 'mmdet_maxq'


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


def _is_sparse_model_cfg(cfg) -> bool:
    return isinstance(cfg, dict) and _short_type(cfg.get('type')) == 'SparseDetector'


def _plain_model_cfg(cfg):
    """``cfg`` with every ``SparseDetector`` config (nested ones too) back to its detector."""
    if _is_sparse_model_cfg(cfg):
        cfg = dict(cfg)
        cfg.pop('type')
        cfg.pop('sparsity', None)
        detector = cfg.pop('detector', None)
        cfg = dict(detector, **cfg) if isinstance(detector, dict) else dict(type=detector, **cfg)
    if isinstance(cfg, dict):
        return {key: _plain_model_cfg(value) for key, value in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_plain_model_cfg(value) for value in cfg)
    return cfg


def _has_sparse_model(cfg) -> bool:
    if _is_sparse_model_cfg(cfg):
        return True
    if isinstance(cfg, dict):
        return any(_has_sparse_model(value) for value in cfg.values())
    if isinstance(cfg, (list, tuple)):
        return any(_has_sparse_model(value) for value in cfg)
    return False


def check_sparse_config(cfg: Config) -> None:
    """Raise :class:`DeployError` unless ``cfg.model`` holds a ``SparseDetector`` config."""
    model = cfg.get('model')
    if not _has_sparse_model(model):
        kind = _short_type(model.get('type')) if isinstance(model, dict) else 'missing'
        raise DeployError(
            f'the config\'s model is a plain {kind}, not a SparseDetector; deploy.py folds a '
            "sparse model (model=dict(type='SparseDetector', detector=..., sparsity=...)); a "
            'plain detector needs no export')


def plain_config(cfg: Config) -> Config:
    """The config of the plain detector, runnable with MMDetection alone.

    Every ``SparseDetector`` model config becomes its detector's config; ``custom_imports``
    loses this package (and goes when nothing is left), ``custom_hooks`` lose this package's
    hooks (:data:`PACKAGE_HOOKS`), and a ``DeviceAwareDDP`` wrapper config is dropped.

    Args:
        cfg (Config): The sparse config.

    Returns:
        Config: A new config.
    """
    check_sparse_config(cfg)
    data = copy.deepcopy(cfg.to_dict())
    data['model'] = _plain_model_cfg(data['model'])
    imports = data.get('custom_imports')
    if imports:
        names = imports.get('imports', [])
        names = [names] if isinstance(names, str) else list(names)
        kept = [name for name in names if name.split('.')[0] != PACKAGE]
        if kept:
            data['custom_imports'] = dict(imports, imports=kept)
        else:
            data.pop('custom_imports')
    hooks = data.get('custom_hooks')
    if hooks:
        data['custom_hooks'] = [h for h in hooks
                                if _short_type(h.get('type')) not in PACKAGE_HOOKS]
    wrapper = data.get('model_wrapper_cfg')
    if isinstance(wrapper, dict) and _short_type(wrapper.get('type')) == 'DeviceAwareDDP':
        data.pop('model_wrapper_cfg')
    return Config(data)


@torch.no_grad()
def fold_sparse_detector(model: nn.Module, progress: Progress = no_progress
                         ) -> Tuple[nn.Module, List[str], List[str]]:
    """Recompute every mask at preserve 0 and fold it into a plain copy of the detector.

    The masks of ``model`` itself are recomputed at preserve rate 0, so ``model`` afterwards
    is the sparse model the export must equal.

    Args:
        model (nn.Module): The trained sparse detector (built by ``SparseDetector``).
        progress (callable): ``progress(items, description)``.

    Returns:
        tuple: ``(plain detector, names of the folded convs, names of those whose mask
        differs from the one the model carried)``; the detector is a deep copy of ``model``
        with every :class:`SparseConv2d` replaced by ``to_dense()``.
    """
    if sparsity_settings(model) is None:
        raise DeployError(f'expected a sparse detector (built by SparseDetector), got a plain '
                          f'{type(model).__name__}')
    plain = copy.deepcopy(model)
    for module in plain.modules():
        for attr in (SETTINGS_ATTR, 'sparsify_report'):
            if attr in module.__dict__:
                delattr(module, attr)
    layers = sparse_convs(model)
    remasked = []
    for name, conv in progress(layers, 'folding masks'):
        before = conv.mask.clone()
        try:
            conv.update_mask(0.0)
        except ValueError as err:
            raise DeployError(f'cannot fold {name}: {err}') from None
        if not torch.equal(before, conv.mask):
            remasked.append(name)
        parent_name, _, child = name.rpartition('.')
        parent = plain.get_submodule(parent_name) if parent_name else plain
        setattr(parent, child, conv.to_dense())
    left = [name for name, _ in sparse_convs(plain)]
    if left:
        raise DeployError(f'sparse convs left after folding: {left}')
    return plain, [name for name, _ in layers], remasked


def _checkpoint(plain: nn.Module, model: nn.Module, folded: List[str], source: str,
                source_meta: Optional[Dict]) -> Dict:
    import mmdet

    settings = sparsity_settings(model)
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


def verify_export(model: nn.Module, config_path: str, checkpoint_path: str,
                  folded: List[str], sample_cfg: Config, num_images: int = 4,
                  atol: float = 1e-4, progress: Progress = no_progress) -> VerificationReport:
    """Run checks (a), (b) and (c) on written files (see :mod:`mmdet_maxq.deploy.verify`).

    Args:
        model (nn.Module): The sparse detector, masks at preserve 0.
        config_path (str): The plain config file.
        checkpoint_path (str): The plain checkpoint file.
        folded (list[str]): Names of the folded convs.
        sample_cfg (Config): Config whose test dataloader gives the sample images.
        num_images (int): Sample images. Defaults to 4.
        atol (float): Tolerance on boxes and scores. Defaults to 1e-4.
        progress (callable): ``progress(items, description)``.

    Returns:
        VerificationReport: The checks; (a) and (c) fail without running when (b) fails.
    """
    report = VerificationReport()
    settings = sparsity_settings(model)
    state = torch.load(checkpoint_path, map_location='cpu', weights_only=True)['state_dict']
    report.layers = check_nm_layers(state, folded, settings.n, settings.m)
    bad = [row.name for row in report.layers if not row.compliant]
    if not folded:
        detail = f'no sparse conv to fold (method={settings.method})'
    else:
        detail = f'{len(folded) - len(bad)} of {len(folded)} folded convs exactly ' \
                 f'{settings.n}:{settings.m}'
        if bad:
            detail += f'; not: {", ".join(bad[:5])}' + (' ...' if len(bad) > 5 else '')
    report.checks.append(Check('nm', f'every folded conv is exactly {settings.n}:{settings.m}',
                               not bad, detail))
    report.image_source, batches = sample_batches(sample_cfg, num_images)
    plain_outputs, load_check = run_plain_process(config_path, checkpoint_path, batches)
    report.checks.append(load_check)
    if plain_outputs is None:
        report.checks.append(Check('predictions', 'predictions', False, 'not run'))
        return report
    report.images, check = compare_predictions(model, batches, plain_outputs, atol, progress)
    report.checks.append(check)
    return report


def export_verified(model: nn.Module, cfg: Config, out: str, source_checkpoint: str = '',
                    source_meta: Optional[Dict] = None, num_images: int = 4,
                    atol: float = 1e-4, overwrite: bool = False, progress: Progress = no_progress) -> ExportResult:
    """Fold ``model``, write the plain checkpoint and config, verify them, move them to ``out``.

    Args:
        model (nn.Module): The trained sparse detector (weights loaded), on any device.
        cfg (Config): Its config (after any overrides).
        out (str): The checkpoint path; the config goes beside it (:func:`deploy_paths`).
        source_checkpoint (str): Path of the checkpoint ``model`` was loaded from (for meta).
        source_meta (dict, optional): That checkpoint's ``meta`` (``dataset_meta`` is kept).
        num_images (int): Sample images of check (c). Defaults to 4.
        atol (float): Tolerance on boxes and scores. Defaults to 1e-4.
        overwrite (bool): Replace existing files. Defaults to False.
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
    tmp_ckpt = temp_file_beside(ckpt_path)
    tmp_cfg = temp_file_beside(cfg_path, '.py')  # Config.fromfile needs the suffix
    done = False
    try:
        torch.save(_checkpoint(plain, model, folded, source_checkpoint, source_meta), tmp_ckpt)
        plain_cfg.dump(tmp_cfg)
        del plain
        report = verify_export(model, tmp_cfg, tmp_ckpt, folded, cfg, num_images, atol,
                               progress)
        if not report.passed:
            raise VerificationError(report)
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

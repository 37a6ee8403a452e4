"""Fold a trained sparse model into the plain model it came from and write it, verified.

The same for a detector (``SparseDetector``, MMDetection) and a classifier
(``SparseClassifier``, mmpretrain): :mod:`.kinds` names what differs. The export takes any
model with :class:`~mmdet_maxq.models.SparseConv2d` inside and its sparsity settings set (as
:func:`~mmdet_maxq.models.sparsify` leaves it), whatever built it, and its config, whose model
is either the sparse type or already the plain one.

What :func:`export_verified` writes for ``OUT`` (e.g. ``deploy/model.pth``):

* ``OUT``: ``{'state_dict': ..., 'meta': ...}``, the plain model's state dict (its own keys,
  no ``mask`` buffers), every sparse conv replaced by a plain conv of weight ``W * S`` with
  ``S`` recomputed at preserve rate 0 (so a checkpoint saved mid-schedule still gives an exact
  N:M model). ``meta`` holds only strings, numbers, lists and dicts (the sparsity settings,
  the folded layers, the source checkpoint, the versions and, when the source had it,
  ``dataset_meta``), so ``torch.load(weights_only=True)`` reads the file with no allow-list.
* ``OUT`` with ``.py`` instead of its extension (``deploy/model.py``): the plain model's
  config: every sparse model config back to its plain type (``MaskRCNN``, ``ImageClassifier``),
  without the ``custom_imports`` of this package, the hooks of this package or its DDP
  wrapper, and with a top-level ``test_pipeline`` (MMDeploy reads it there). A server with
  MMDetection or mmpretrain alone runs it.

Both are written to temporary files in the destination folder, verified from there
(:mod:`mmdet_maxq.deploy.verify`) and renamed into place only when every check passes.
"""
import copy
import importlib
import os
import os.path as osp
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config

from mmdet_maxq.engine.hooks import __all__ as HOOK_NAMES
from mmdet_maxq.models.sparsify import (SETTINGS_ATTR, set_submodule, sparse_layers,
                                        sparsity_settings)
from mmdet_maxq.utils.atomic import check_new_path, temp_file_beside
from mmdet_maxq.utils.config_utils import find_test_pipeline
from mmdet_maxq.version import __version__
from .kinds import (ModelKind, find_sparse_kind, kind_of_model, kind_of_sparse_cfg,
                    registered_type_name)
from .verify import (DEFAULT_TOLERANCE, Check, Progress, VerificationReport, check_nm_layers,
                     compare_predictions, no_progress, run_plain_process, sample_batches)

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
        folded (list[str]): Names of the folded layers.
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


def deploy_paths(out: str, overwrite: bool = False) -> Tuple[str, str]:
    """The checkpoint path and the config path written beside it, both free to write.

    Args:
        out (str): The checkpoint path, e.g. ``deploy/model.pth``.
        overwrite (bool): Allow replacing existing files. Defaults to False.

    Returns:
        tuple: ``(out, config path)``, e.g. ``('deploy/model.pth', 'deploy/model.py')``.

    Raises:
        DeployError: ``out`` is not a checkpoint file path.
        FileExistsError: One of them exists and ``overwrite`` is False.
    """
    root, ext = osp.splitext(out)
    if ext == '.py' or not osp.basename(root):
        raise DeployError(f'output {out!r} must be a checkpoint file path such as '
                          'deploy/model.pth (the config is written beside it as .py)')
    for path in (out, root + '.py'):
        check_new_path(path, overwrite)
    return out, root + '.py'


def _plain_model_cfg(cfg):
    """``cfg`` with every sparse model config (nested ones too) back to its plain model."""
    kind = kind_of_sparse_cfg(cfg)
    if kind is not None:
        cfg = dict(cfg)
        cfg.pop('type')
        cfg.pop('sparsity', None)
        inner = cfg.pop(kind.inner_key, None)
        cfg = dict(inner, **cfg) if isinstance(inner, dict) else dict(type=inner, **cfg)
    if isinstance(cfg, dict):
        return {key: _plain_model_cfg(value) for key, value in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_plain_model_cfg(value) for value in cfg)
    return cfg


def check_sparse_config(cfg: Config) -> ModelKind:
    """The kind of sparse model ``cfg.model`` holds; :class:`DeployError` when it holds none.

    Args:
        cfg (Config): A config for ``tools/deploy.py``.

    Returns:
        ModelKind: Detector (``SparseDetector``) or classifier (``SparseClassifier``).
    """
    model = cfg.get('model')
    kind = find_sparse_kind(model)
    if kind is None:
        name = registered_type_name(model.get('type')) if isinstance(model, dict) else 'missing'
        raise DeployError(
            f'the config\'s model is a plain {name}, not a SparseDetector or SparseClassifier; '
            "deploy.py folds a sparse model (model=dict(type='SparseDetector', detector=..., "
            "sparsity=...) or dict(type='SparseClassifier', classifier=..., sparsity=...)); a "
            'plain model needs no export')
    return kind


def plain_config(cfg: Config) -> Config:
    """The config of the plain model, runnable with MMDetection or mmpretrain alone.

    Every sparse model config becomes its plain model's config (a config whose model is
    already plain keeps it); ``custom_imports`` loses this package (and goes when nothing is
    left), ``custom_hooks`` lose this package's hooks (:data:`PACKAGE_HOOKS`), a
    ``DeviceAwareDDP`` wrapper config is dropped, and the test pipeline
    (``test_dataloader.dataset.pipeline``, through dataset wrappers) is also written as the
    top-level ``test_pipeline`` that MMDeploy reads.

    Args:
        cfg (Config): The sparse model's config.

    Returns:
        Config: A new config.

    Raises:
        DeployError: The config has no test pipeline.
    """
    data = copy.deepcopy(cfg.to_dict())
    data['model'] = _plain_model_cfg(data.get('model'))
    pipeline = find_test_pipeline(data)
    if not pipeline:
        raise DeployError('the config has no test pipeline (test_dataloader.dataset.pipeline '
                          'or test_pipeline); add the test_dataloader the model is evaluated '
                          'with, the deployed config needs its pipeline')
    data['test_pipeline'] = pipeline
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
                                if registered_type_name(h.get('type')) not in PACKAGE_HOOKS]
    wrapper = data.get('model_wrapper_cfg')
    if isinstance(wrapper, dict) and \
            registered_type_name(wrapper.get('type')) == 'DeviceAwareDDP':
        data.pop('model_wrapper_cfg')
    return Config(data)


@torch.no_grad()
def fold_sparse_model(model: nn.Module, progress: Progress = no_progress
                      ) -> Tuple[nn.Module, List[str], List[str]]:
    """Recompute every mask at preserve 0 and fold it into a plain copy of the model.

    The masks of ``model`` itself are recomputed at preserve rate 0, so ``model`` afterwards
    is the sparse model the export must equal.

    Args:
        model (nn.Module): The trained sparse detector or classifier: ``SparseConv2d`` inside
            and its sparsity settings set (by :func:`~mmdet_maxq.models.sparsify`).
        progress (callable): ``progress(items, description)``.

    Returns:
        tuple: ``(plain model, names of the folded layers, names of those whose mask
        differs from the one the model carried)``; the plain model is a deep copy of ``model``
        with every :class:`SparseConv2d` replaced by ``to_dense()``.
    """
    if sparsity_settings(model) is None:
        raise DeployError(f'expected a sparse model (SparseDetector, SparseClassifier or one '
                          f'made by mmdet_maxq.models.sparsify()), got a plain '
                          f'{type(model).__name__}')
    plain = copy.deepcopy(model)
    for module in plain.modules():
        for attr in (SETTINGS_ATTR, 'sparsify_report'):
            if attr in module.__dict__:
                delattr(module, attr)
    layers = sparse_layers(model)
    remasked = []
    for name, conv in progress(layers, 'folding masks'):
        before = conv.mask  # update_mask binds a new tensor
        try:
            conv.update_mask(0.0)
        except ValueError as err:
            raise DeployError(f'cannot fold {name}: {err}') from None
        if not torch.equal(before, conv.mask):
            remasked.append(name)
        set_submodule(plain, name, conv.to_dense())
    left = [name for name, _ in sparse_layers(plain)]
    if left:
        raise DeployError(f'sparse layers left after folding: {left}')
    return plain, [name for name, _ in layers], remasked


def _checkpoint(plain: nn.Module, model: nn.Module, kind: ModelKind, folded: List[str],
                source: str, source_meta: Optional[Dict]) -> Dict:
    package = importlib.import_module(kind.package)
    settings = sparsity_settings(model)
    meta = {
        'mmdet_maxq_version': __version__,
        f'{kind.package}_version': package.__version__,
        'source_checkpoint': osp.abspath(source) if source else None,
        'sparsity': dict(method=settings.method, n=settings.n, m=settings.m, tau=settings.tau,
                         preserve=0.0, folded_layers=list(folded)),
        'note': 'N:M masks folded into the weights (W * S at preserve 0) by mmdet_maxq '
                f'tools/deploy.py; load with the plain {kind.name} config written beside it'}
    if source_meta and source_meta.get('dataset_meta') is not None:
        meta['dataset_meta'] = source_meta['dataset_meta']
    state = OrderedDict((key, value.detach().cpu().clone())
                        for key, value in plain.state_dict().items())
    return dict(state_dict=state, meta=meta)


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device('cpu')


def verify_export(model: nn.Module, config_path: str, checkpoint_path: str,
                  folded: List[str], sample_cfg: Config, num_images: int = 4,
                  tol: float = DEFAULT_TOLERANCE, progress: Progress = no_progress,
                  kind: Optional[ModelKind] = None) -> VerificationReport:
    """Run checks (a), (b) and (c) on written files (see :mod:`mmdet_maxq.deploy.verify`).

    The plain model runs on ``model``'s device, so (c) compares like with like.

    Args:
        model (nn.Module): The sparse model, masks at preserve 0.
        config_path (str): The plain config file.
        checkpoint_path (str): The plain checkpoint file.
        folded (list[str]): Names of the folded layers.
        sample_cfg (Config): Config whose test dataloader gives the sample images.
        num_images (int): Sample images. Defaults to 4.
        tol (float): Relative tolerance of (c). Defaults to ``DEFAULT_TOLERANCE`` (1e-4).
        progress (callable): ``progress(items, description)``.
        kind (ModelKind, optional): The model's kind; found from ``model`` when None.

    Returns:
        VerificationReport: The checks; (a) and (c) fail without running when (b) fails.
    """
    kind = kind or kind_of_model(model)
    report = VerificationReport(kind=kind.name)
    settings = sparsity_settings(model)
    state = torch.load(checkpoint_path, map_location='cpu', weights_only=True)['state_dict']
    report.layers = check_nm_layers(state, folded, settings.n, settings.m)
    bad = [row.name for row in report.layers if not row.compliant]
    # 'convs' for a conv-only model, 'layers' once linear layers are folded too.
    what = 'convs' if all(isinstance(model.get_submodule(name), nn.Conv2d)
                          for name in folded) else 'layers'
    if not folded:
        detail = f'no sparse layer to fold (method={settings.method})'
    else:
        detail = f'{len(folded) - len(bad)} of {len(folded)} folded {what} exactly ' \
                 f'{settings.n}:{settings.m}'
        if bad:
            detail += f'; not: {", ".join(bad[:5])}' + (' ...' if len(bad) > 5 else '')
    report.checks.append(Check('nm', f'every folded {what[:-1]} is exactly '
                                     f'{settings.n}:{settings.m}', not bad, detail))
    report.image_source, batches = sample_batches(sample_cfg, num_images, kind)
    plain_outputs, load_check = run_plain_process(config_path, checkpoint_path, batches,
                                                  kind.package, str(_device_of(model)))
    report.checks.append(load_check)
    if plain_outputs is None:
        report.checks.append(Check('predictions', 'predictions', False, 'not run'))
        return report
    report.images, check = compare_predictions(model, batches, plain_outputs, tol, progress)
    report.checks.append(check)
    return report


def export_verified(model: nn.Module, cfg: Config, out: str, source_checkpoint: str = '',
                    source_meta: Optional[Dict] = None, num_images: int = 4,
                    tol: float = DEFAULT_TOLERANCE, overwrite: bool = False,
                    progress: Progress = no_progress) -> ExportResult:
    """Fold ``model``, write the plain checkpoint and config, verify them, move them to ``out``.

    Args:
        model (nn.Module): The trained sparse detector or classifier (weights loaded), on any
            device: ``SparseConv2d`` inside and its sparsity settings set, however it was built.
        cfg (Config): Its config (after any overrides); its model may be the sparse type or
            the plain one (a model sparsified in Python with ``sparsify()``).
        out (str): The checkpoint path; the config goes beside it (:func:`deploy_paths`).
        source_checkpoint (str): Path of the checkpoint ``model`` was loaded from (for meta).
            Defaults to ``''`` (none).
        source_meta (dict, optional): That checkpoint's ``meta`` (``dataset_meta`` is kept).
        num_images (int): Sample images of check (c). Defaults to 4.
        tol (float): Relative tolerance of check (c) (see :mod:`mmdet_maxq.deploy.verify`).
            Defaults to ``DEFAULT_TOLERANCE`` (1e-4).
        overwrite (bool): Replace existing files. Defaults to False.
        progress (callable): ``progress(items, description)``.

    Returns:
        ExportResult: The written paths and the verification report.

    Raises:
        DeployError: A bad config, model or output path (nothing written).
        FileExistsError: ``out`` or its config exists and ``overwrite`` is False.
        VerificationError: A check failed; nothing is left at ``out`` or its config path.
    """
    ckpt_path, cfg_path = deploy_paths(out, overwrite)
    if num_images < 1:
        raise DeployError(f'num_images must be >= 1, got {num_images}')
    if not tol >= 0:
        raise DeployError(f'tol must be >= 0, got {tol}')
    try:
        kind = kind_of_model(model)
    except ValueError as err:
        raise DeployError(str(err)) from None
    plain_cfg = plain_config(cfg)
    model.eval()
    plain, folded, remasked = fold_sparse_model(model, progress)
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
        torch.save(_checkpoint(plain, model, kind, folded, source_checkpoint, source_meta),
                   tmp_ckpt)
        plain_cfg.dump(tmp_cfg)
        del plain
        report = verify_export(model, tmp_cfg, tmp_ckpt, folded, cfg, num_images, tol,
                               progress, kind)
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

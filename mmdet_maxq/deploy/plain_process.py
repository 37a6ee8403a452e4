"""Run an exported plain model where ``mmdet_maxq`` cannot be imported.

This file is both a module (the parent imports :func:`run_batch` and :func:`exact_float32` to
run the sparse model the same way) and a script that
:func:`mmdet_maxq.deploy.verify.run_plain_process` starts in a fresh interpreter::

    python plain_process.py CONFIG CHECKPOINT BATCHES RESULT PACKAGE DEVICE

The script makes ``import mmdet_maxq`` fail before anything else, then does what a server with
MMDetection (``PACKAGE=mmdet``) or mmpretrain (``PACKAGE=mmpretrain``) alone does:
``Config.fromfile`` (which imports the config's ``custom_imports``), ``MODELS.build`` from that
package's registry, ``torch.load(weights_only=True)`` with no allow-list added, strict key
matching, and predictions on the sample batches on ``DEVICE`` (the sparse model's device, with
TF32 off: see :func:`exact_float32`). It writes a result dict with ``torch.save``: ``ok``,
``stage`` and ``error`` on failure, else ``model_type``, ``registry``, ``keys`` and ``outputs``
(one ``(predictions, features)`` pair per batch).

It imports nothing from ``mmdet_maxq`` and must stay that way.
"""
import contextlib
import copy
import importlib
import sys
import traceback
from typing import Dict, Iterator, List, Tuple

import torch
import torch.nn as nn

BLOCKED_PACKAGE = 'mmdet_maxq'


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """TF32 off and deterministic cuDNN for the comparison, restored afterwards.

    On Ampere and later GPUs cuDNN convolutions run in TF32 by default (10-bit mantissa), so
    two runs of the same weights can differ far beyond float32 rounding; with TF32 off and
    cuDNN's algorithm choice fixed, both models compute in full float32. No effect on a CPU.
    """
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) = saved


def _predictions(sample) -> Dict[str, torch.Tensor]:
    """A prediction as tensors: a detector's instances or a classifier's scores and label."""
    if 'pred_instances' in sample:
        pred = sample.pred_instances
        return {key: pred[key].detach().cpu() for key in ('bboxes', 'scores', 'labels', 'masks')
                if key in pred}
    return dict(scores=sample.pred_score.detach().cpu(),
                labels=sample.pred_label.detach().cpu().reshape(-1))


@torch.no_grad()
def run_batch(model: nn.Module, batch: dict) -> Tuple[Dict[str, torch.Tensor], List[torch.Tensor]]:
    """Predictions (cloned to CPU) and ``extract_feat`` outputs of one batch, eval mode.

    Args:
        model (nn.Module): A detector or a classifier, in eval mode.
        batch (dict): ``inputs`` and ``data_samples`` of one image.

    Returns:
        tuple: ``(predictions, features)``: a detector's ``bboxes``, ``scores``, ``labels``
        (and ``masks``), or a classifier's class ``scores`` and ``labels``; and the
        ``extract_feat`` outputs (backbone + neck).
    """
    batch = copy.deepcopy(batch)  # the preprocessor and predict write into the data samples
    data = model.data_preprocessor(batch, False)
    feats = model.extract_feat(data['inputs'])
    feats = [f.detach().float().cpu() for f in (feats if isinstance(feats, (list, tuple))
                                                else [feats])]
    return _predictions(model(**data, mode='predict')[0]), feats


def _plain_run(config_path: str, checkpoint_path: str, batches_path: str, package: str,
               device: str) -> Dict:
    stage = 'config'
    try:
        from mmengine.config import Config
        from mmengine.registry import init_default_scope

        cfg = Config.fromfile(config_path)
        stage = 'build'
        init_default_scope(cfg.get('default_scope', package))
        registry = importlib.import_module(f'{package}.registry')
        # As MMEngine's Runner builds it: from a copy (DETR-family constructors write into
        # their bbox_head dict), with the top-level data_preprocessor merged in (mmpretrain).
        model_cfg = copy.deepcopy(cfg.model)
        if cfg.get('data_preprocessor') is not None:
            model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
        model = registry.MODELS.build(model_cfg)
        stage = 'checkpoint'
        checkpoint = torch.load(checkpoint_path, map_location='cpu', weights_only=True)
        state = checkpoint['state_dict']
        own = set(model.state_dict())
        missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
        if missing or unexpected:
            return dict(ok=False, stage=stage, error=f'key mismatch: missing {missing[:5]}, '
                        f'unexpected {unexpected[:5]}')
        model.load_state_dict(state, strict=True)
        model.to(device).eval()
        stage = 'predict'
        batches = torch.load(batches_path, weights_only=False)  # written by our parent
        with exact_float32():
            outputs = [run_batch(model, batch) for batch in batches]
    except Exception as err:  # reported to the parent as the failed check, with the trace
        return dict(ok=False, stage=stage, error=f'{type(err).__name__}: {err}',
                    trace=traceback.format_exc(limit=8))
    return dict(ok=True, model_type=type(model).__name__, registry=f'{package}.registry.MODELS',
                keys=len(own), outputs=outputs)


def main(argv: List[str]) -> int:
    """Run the plain model (see the module docstring) and write the result; returns 0."""
    config_path, checkpoint_path, batches_path, result_path, package, device = argv
    sys.modules[BLOCKED_PACKAGE] = None  # any `import mmdet_maxq` now raises ImportError
    result = _plain_run(config_path, checkpoint_path, batches_path, package, device)
    torch.save(result, result_path)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))

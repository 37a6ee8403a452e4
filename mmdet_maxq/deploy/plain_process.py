"""Run an exported plain detector where ``mmdet_maxq`` cannot be imported.

This file is both a module (the parent imports :func:`run_batch` to run the sparse model
the same way) and a script that :func:`mmdet_maxq.deploy.verify.run_plain_process` starts in a
fresh interpreter::

    python plain_process.py CONFIG CHECKPOINT BATCHES RESULT

The script makes ``import mmdet_maxq`` fail before anything else, then does what a server with
MMDetection alone does: ``Config.fromfile`` (which imports the config's ``custom_imports``),
``MODELS.build`` from MMDetection's registry, ``torch.load(weights_only=True)`` with no
allow-list added, strict key matching, and predictions on the sample batches. It writes a
result dict with ``torch.save``: ``ok``, ``stage`` and ``error`` on failure, else
``model_type``, ``keys`` and ``outputs`` (one ``(predictions, features)`` pair per batch).

It imports nothing from ``mmdet_maxq`` and must stay that way.
"""
import copy
import sys
import traceback
from typing import Dict, List, Tuple

import torch
import torch.nn as nn

BLOCKED_PACKAGE = 'mmdet_maxq'


@torch.no_grad()
def run_batch(model: nn.Module, batch: dict) -> Tuple[Dict[str, torch.Tensor], List[torch.Tensor]]:
    """Predictions (cloned to CPU) and ``extract_feat`` outputs of one batch, eval mode."""
    batch = copy.deepcopy(batch)  # the preprocessor and predict write into the data samples
    data = model.data_preprocessor(batch, False)
    feats = model.extract_feat(data['inputs'])
    feats = [f.detach().float().cpu() for f in (feats if isinstance(feats, (list, tuple))
                                                 else [feats])]
    pred = model(**data, mode='predict')[0].pred_instances
    out = {key: pred[key].detach().cpu() for key in ('bboxes', 'scores', 'labels', 'masks')
           if key in pred}
    return out, feats


def _plain_run(config_path: str, checkpoint_path: str, batches_path: str) -> Dict:
    stage = 'config'
    try:
        from mmengine.config import Config
        from mmengine.registry import init_default_scope

        cfg = Config.fromfile(config_path)
        stage = 'build'
        init_default_scope(cfg.get('default_scope', 'mmdet'))
        from mmdet.registry import MODELS
        model = MODELS.build(cfg.model)
        stage = 'checkpoint'
        checkpoint = torch.load(checkpoint_path, map_location='cpu', weights_only=True)
        state = checkpoint['state_dict']
        own = set(model.state_dict())
        missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
        if missing or unexpected:
            return dict(ok=False, stage=stage, error=f'key mismatch: missing {missing[:5]}, '
                        f'unexpected {unexpected[:5]}')
        model.load_state_dict(state, strict=True)
        model.eval()
        stage = 'predict'
        batches = torch.load(batches_path, weights_only=False)  # written by our parent
        outputs = [run_batch(model, batch) for batch in batches]
    except Exception as err:  # reported to the parent as the failed check, with the trace
        return dict(ok=False, stage=stage, error=f'{type(err).__name__}: {err}',
                    trace=traceback.format_exc(limit=8))
    return dict(ok=True, model_type=type(model).__name__, keys=len(own), outputs=outputs)


def main(argv: List[str]) -> int:
    config_path, checkpoint_path, batches_path, result_path = argv
    sys.modules[BLOCKED_PACKAGE] = None  # any `import mmdet_maxq` now raises ImportError
    result = _plain_run(config_path, checkpoint_path, batches_path)
    torch.save(result, result_path)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))

"""Config look-ups shared by the tools and the deploy verification."""
from typing import Tuple

from mmengine.config import Config


def pipeline_test_scale(cfg: Config, default=(800, 1333)) -> Tuple[int, int]:
    """``(H, W)`` of the test pipeline's ``Resize`` (keep-ratio scales as short x long side).

    Args:
        cfg (Config): The full config.
        default (tuple[int, int]): Returned when the pipeline has no ``Resize`` with a scale.
            Defaults to MMDetection's COCO test scale ``(800, 1333)``.
    """
    pipeline = (cfg.get('test_dataloader') or {}).get('dataset', {}).get('pipeline', [])
    for step in pipeline:
        if step.get('type') == 'Resize' and step.get('scale'):
            w, h = step['scale']
            return (min(w, h), max(w, h)) if step.get('keep_ratio') else (h, w)
    return tuple(default)

"""Config look-ups shared by the tools and the deploy verification."""
import copy
from typing import Iterator, List, Optional, Tuple

from mmengine.config import Config


def find_test_pipeline(cfg) -> Optional[List[dict]]:
    """The test pipeline: ``test_dataloader.dataset.pipeline``, through dataset wrappers.

    Wrappers (``RepeatDataset``, ``ClassBalancedDataset``, ``ConcatDataset``, ...) are walked
    down through their ``dataset`` (or the first of their ``datasets``) until a dataset with a
    ``pipeline`` is found. Without a test dataloader the top-level ``test_pipeline`` is used.

    Args:
        cfg (Config | dict): The full config.

    Returns:
        list[dict] | None: The pipeline steps, or None when the config has none.
    """
    dataset = (cfg.get('test_dataloader') or {}).get('dataset')
    while isinstance(dataset, dict):
        if dataset.get('pipeline'):
            return list(dataset['pipeline'])
        inner = dataset.get('dataset')
        if inner is None and dataset.get('datasets'):
            inner = dataset['datasets'][0]
        dataset = inner
    top = cfg.get('test_pipeline')
    return list(top) if top else None


def _size_hw(size) -> Tuple[int, int]:
    """A crop or resize size as ``(H, W)``: an int is square, a pair is ``(W, H)``."""
    if isinstance(size, int):
        return size, size
    w, h = size
    return h, w


def pipeline_test_scale(cfg: Config, default=(800, 1333)) -> Tuple[int, int]:
    """``(H, W)`` of the test pipeline's images (:func:`find_test_pipeline`).

    The last step that fixes the size wins: a ``Resize`` with a ``scale`` (keep-ratio scales
    as short x long side) or a ``CenterCrop`` with a ``crop_size`` (mmpretrain).

    Args:
        cfg (Config): The full config.
        default (tuple[int, int]): Returned when no step fixes the size. Defaults to
            MMDetection's COCO test scale ``(800, 1333)``.
    """
    size = tuple(default)
    for step in find_test_pipeline(cfg) or []:
        if step.get('type') == 'Resize' and step.get('scale'):
            h, w = _size_hw(step['scale'])
            size = (min(w, h), max(w, h)) if step.get('keep_ratio') else (h, w)
        elif step.get('type') == 'CenterCrop' and step.get('crop_size'):
            size = _size_hw(step['crop_size'])
    return size


def pretrained_inits(cfg, key: str = 'model') -> Iterator[Tuple[str, str]]:
    """``(config key, checkpoint)`` of every ``init_cfg=dict(type='Pretrained', ...)`` under
    ``cfg`` (nested dicts and lists), e.g. ``('model.backbone.init_cfg.checkpoint', path)``.

    Args:
        cfg (dict | list): A model config (or any part of a config).
        key (str): The config key of ``cfg``. Defaults to ``'model'``.
    """
    if isinstance(cfg, dict):
        if cfg.get('type') == 'Pretrained' and isinstance(cfg.get('checkpoint'), str):
            yield key + '.checkpoint', cfg['checkpoint']
        for name, value in cfg.items():
            yield from pretrained_inits(value, f'{key}.{name}')
    elif isinstance(cfg, (list, tuple)):
        for idx, value in enumerate(cfg):
            yield from pretrained_inits(value, f'{key}.{idx}')


def model_config(cfg) -> dict:
    """``cfg.model`` as MMEngine's Runner builds it, as a deep copy.

    A copy, because some constructors write into the dicts they get (DETR-family detectors
    set ``share_pred_layer``, ``num_pred_layer`` and ``as_two_stage`` in ``bbox_head``) and
    the config may be written out afterwards. The top-level ``data_preprocessor`` (where
    mmpretrain configs keep it: ``num_classes`` for the one-hot labels of Mixup / CutMix) is
    merged in unless the model has its own, as the Runner does.

    Args:
        cfg (Config | dict): The full config.

    Returns:
        dict: A new model config.
    """
    model = copy.deepcopy(cfg['model'])
    preprocessor = cfg.get('data_preprocessor')
    if isinstance(model, dict) and preprocessor is not None:
        model.setdefault('data_preprocessor', copy.deepcopy(preprocessor))
    return model

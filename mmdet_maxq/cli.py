"""Input checks shared by the command-line tools: one clear line per problem.

Each check raises :class:`CliError`, a ``SystemExit`` whose message names the path and the fix,
so a tool stops before it writes anything.
"""
import os
import os.path as osp
import zipfile
from typing import Iterator, List, Optional, Tuple

from mmengine.config import Config


class CliError(SystemExit):
    """A bad argument of a command-line tool: ``SystemExit`` prints the message to stderr and
    the tool exits with status 1."""

    def __init__(self, message: str):
        super().__init__(f'error: {message}')
        self.message = message


def load_config(path: str) -> Config:
    """``Config.fromfile`` with a clear error for a missing or unparsable config."""
    if not osp.isfile(path):
        raise CliError(f'config file {path!r} does not exist; pass the path of a config '
                       '(e.g. configs/synthetic/mask-rcnn_r18-maxq-2of8_fpn_synthetic.py)')
    try:
        return Config.fromfile(path)
    except (SyntaxError, KeyError, ValueError, ImportError, FileNotFoundError) as err:
        raise CliError(f'cannot parse config {path!r}: {type(err).__name__}: {err}') from err


def check_checkpoint_file(path: str) -> None:
    """Refuse a checkpoint path that is missing or not a readable PyTorch file."""
    if not osp.exists(path):
        raise CliError(f'checkpoint {path!r} does not exist; pass the .pth file that training '
                       'wrote (e.g. WORK_DIR/epoch_12.pth)')
    if not osp.isfile(path) or not os.access(path, os.R_OK):
        raise CliError(f'checkpoint {path!r} is not a readable file; check the path and its '
                       'permissions')
    if not zipfile.is_zipfile(path):
        raise CliError(f'checkpoint {path!r} is not a PyTorch checkpoint (corrupt or truncated '
                       'file?); re-download or re-save it')


def _datasets(cfg) -> Iterator:
    """Every dataset config under ``cfg``, through wrappers (``dataset``/``datasets`` keys)."""
    if isinstance(cfg, dict):
        if 'data_root' in cfg or 'ann_file' in cfg:
            yield cfg
        for key in ('dataset', 'datasets'):
            if key in cfg:
                yield from _datasets(cfg[key])
    elif isinstance(cfg, (list, tuple)):
        for item in cfg:
            yield from _datasets(item)


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


def check_data_roots(cfg: Config, loaders: List[str]) -> None:
    """Refuse a config whose dataset root or annotation file does not exist.

    Args:
        cfg (Config): The full config.
        loaders (list[str]): Dataloader keys to check, e.g. ``['train_dataloader']``.
    """
    for loader in loaders:
        loader_cfg: Optional[dict] = cfg.get(loader)
        if not loader_cfg:
            continue
        for dataset in _datasets(loader_cfg.get('dataset')):
            root = dataset.get('data_root', '') or ''
            if root and not osp.isdir(root):
                raise CliError(
                    f'{loader}.dataset.data_root {root!r} does not exist; point it at your '
                    f"dataset with --cfg-options {loader}.dataset.data_root=PATH (for the "
                    'synthetic set: python tools/misc/make_synthetic_coco.py data/synthetic_coco)')
            ann = dataset.get('ann_file')
            if ann:
                path = ann if osp.isabs(ann) else osp.join(root, ann)
                if not osp.isfile(path):
                    raise CliError(f'{loader}.dataset.ann_file {path!r} does not exist; check '
                                   'data_root and ann_file')


def setup_cpu_distributed(cfg: Config) -> None:
    """Start a CPU (gloo) process group for ``--launcher pytorch`` where there is no GPU.

    MMEngine's launcher calls ``torch.cuda.set_device`` unconditionally, which fails on a
    CPU-only machine; the runner skips its own start when a group already exists. The DDP
    wrapper defaults to :class:`DeviceAwareDDP`, which accepts a CPU module.
    """
    import torch
    import torch.distributed as dist

    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return
    backend = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('backend', 'nccl')
    if backend != 'gloo':
        raise CliError(f"env_cfg.dist_cfg.backend={backend!r} needs GPUs; on CPUs pass "
                       "--cfg-options env_cfg.dist_cfg.backend=gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    if not cfg.get('model_wrapper_cfg'):
        cfg.model_wrapper_cfg = dict(type='DeviceAwareDDP')


def teardown_distributed() -> None:
    """Destroy the default process group at the end of a successful run.

    Left alive, gloo's threads can abort the interpreter at exit ("terminate called without
    an active exception") after a successful run. Called on success only: the barrier would
    wait forever for a rank that failed.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # no rank tears down while another still talks to it
        dist.destroy_process_group()

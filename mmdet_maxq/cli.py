"""Input checks shared by the command-line tools: one clear line per problem.

Each check raises :class:`CliError`, a ``SystemExit`` whose message names the path and the fix,
so a tool stops before it writes anything.
"""
import os.path as osp
import re
from typing import Iterator, List, Optional

from mmengine.config import Config

from mmdet_maxq.checkpoint.file_check import checkpoint_file_problem
from mmdet_maxq.utils.warnings_filter import silence_known_warnings

# ``scheme://``: URLs and remote storage that MMEngine reads itself (http, https, s3, petrel,
# open-mmlab, torchvision, ...); nothing to check on the local disk.
_REMOTE = re.compile(r'^[A-Za-z][A-Za-z0-9+.\-]*://')


class CliError(SystemExit):
    """A bad argument of a command-line tool: ``SystemExit`` prints the message to stderr and
    the tool exits with status 1."""

    def __init__(self, message: str):
        super().__init__(f'error: {message}')
        self.message = message


def is_remote(path) -> bool:
    """Whether ``path`` is a URL or remote storage path (``scheme://...``)."""
    return isinstance(path, str) and bool(_REMOTE.match(path))


def load_config(path: str) -> Config:
    """``Config.fromfile`` with a clear error for a missing or unparsable config."""
    if not osp.isfile(path):
        raise CliError(f'config file {path!r} does not exist; pass the path of a config '
                       '(e.g. configs/synthetic/mask-rcnn_r18-tiny-maxq-2of8_fpn_synthetic.py)')
    silence_known_warnings()  # MMEngine's pkg_resources warnings, raised while parsing
    try:
        return Config.fromfile(path)
    except (SyntaxError, KeyError, ValueError, ImportError, FileNotFoundError) as err:
        raise CliError(f'cannot parse config {path!r}: {type(err).__name__}: {err}') from err


def check_checkpoint_file(path: str) -> None:
    """Refuse a local checkpoint path that is missing or not a readable PyTorch file.

    URLs and remote paths (``http://``, ``https://``, ``open-mmlab://``, ``torchvision://``,
    ``s3://``, any ``scheme://``) are accepted untouched: MMEngine downloads or reads them
    itself. A local file must be a PyTorch checkpoint: a complete zip archive (``torch.save``
    since 1.6) or the legacy pickle format (``_use_new_zipfile_serialization=False``), told
    apart by their headers; anything else (truncated zip, random bytes, empty file) is refused.
    """
    if is_remote(path):
        return
    path = osp.expanduser(path)  # as MMEngine's load_from_local does
    problem = checkpoint_file_problem(path)
    if problem is not None:
        raise CliError(f'checkpoint {path!r} {problem}')


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


def check_data_roots(cfg: Config, loaders: List[str]) -> None:
    """Refuse a config whose local dataset root or annotation file does not exist.

    Remote data is not checked: a ``data_root`` or ``ann_file`` with a ``scheme://`` prefix
    (``s3://``, ``petrel://``, ``http://``, ...) or a dataset (or dataloader) with
    ``backend_args`` set, which MMEngine's file backends read.

    Args:
        cfg (Config): The full config.
        loaders (list[str]): Dataloader keys to check, e.g. ``['train_dataloader']``.
    """
    for loader in loaders:
        loader_cfg: Optional[dict] = cfg.get(loader)
        if not loader_cfg or loader_cfg.get('backend_args') is not None:
            continue
        for dataset in _datasets(loader_cfg.get('dataset')):
            if dataset.get('backend_args') is not None:
                continue
            root = dataset.get('data_root', '') or ''
            if is_remote(root):
                continue
            if root and not osp.isdir(root):
                raise CliError(
                    f'{loader}.dataset.data_root {root!r} does not exist; point it at your '
                    f"dataset with --cfg-options {loader}.dataset.data_root=PATH (for the "
                    'synthetic set: python tools/misc/make_synthetic_coco.py data/synthetic_coco)')
            ann = dataset.get('ann_file')
            if ann and not is_remote(ann):
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

"""Input checks shared by the command-line tools: one clear line per problem.

Each check raises :class:`CliError`, a ``SystemExit`` whose message names the path and the fix,
so a tool stops before it writes anything.
"""
import fnmatch
import os.path as osp
import pickle
import re
from typing import Iterator, List, Optional

from mmengine.config import Config

from mmdet_maxq.checkpoint.file_check import checkpoint_file_problem, checkpoint_meta
from mmdet_maxq.utils.config_utils import model_config, pretrained_inits
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


def check_pretrained_checkpoints(cfg: Config) -> None:
    """Refuse a model config whose ``Pretrained`` init names a local checkpoint that is
    missing, unreadable, or of another architecture than the module it initialises.

    Remote checkpoints (``torchvision://``, URLs) are MMEngine's to fetch and are not checked.
    A local one is compared key by key and shape by shape (after its ``prefix``) with the state
    of the module that carries the ``init_cfg``, built from ``cfg.model``: MMEngine's
    ``Pretrained`` init loads non-strictly and would only log such a mismatch. The ``mask``
    entries that checkpoints of earlier versions hold beside sparse weights are ignored, as
    loading ignores them.

    Args:
        cfg (Config): The full config (its ``model`` is searched).
    """
    inits = [(key, path) for key, path in pretrained_inits(cfg.get('model'), 'model')
             if not is_remote(path)]
    for key, path in inits:
        if not osp.exists(osp.expanduser(path)):
            raise CliError(
                f'{key} {path!r} does not exist; train the sparse ImageNet backbone first '
                '(configs/imagenet/, its epoch_*.pth) or point the config at it with '
                f'--cfg-options {key}=PATH')
        check_checkpoint_file(path)
    if inits:
        _check_pretrained_shapes(cfg, inits)


def _check_pretrained_shapes(cfg: Config, inits) -> None:
    import torch
    from mmengine.registry import MODELS, init_default_scope

    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(model_config(cfg))
    for key, path in inits:
        module_path = key[len('model.'):-len('.init_cfg.checkpoint')]
        init = cfg.model
        for part in key.split('.')[1:-1]:
            init = init[int(part)] if isinstance(init, (list, tuple)) else init[part]
        try:
            module = model.get_submodule(module_path) if module_path else model
        except AttributeError:
            continue  # an init_cfg inside a list or of a non-module: MMEngine's to report
        loaded = torch.load(osp.expanduser(path), map_location='cpu', weights_only=True)
        state = loaded.get('state_dict', loaded) if isinstance(loaded, dict) else {}
        prefix = init.get('prefix')
        if prefix:
            prefix = prefix if prefix.endswith('.') else prefix + '.'
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if not state:
                raise CliError(f'{key} {path!r} has no key starting with prefix {prefix!r} '
                               f'({key[:-len("checkpoint")]}prefix); fix the prefix or the file')
        expected = module.state_dict()
        wrong = [f'{k}: checkpoint {tuple(v.shape)}, model {tuple(expected[k].shape)}'
                 for k, v in state.items() if k in expected and
                 isinstance(v, torch.Tensor) and v.shape != expected[k].shape]
        new_keys = _declared_new_keys(cfg, module_path)
        missing = [k for k in expected if k not in state
                   and not any(fnmatch.fnmatchcase(k, p) for p in new_keys)]
        idle = [p for p in new_keys if not any(
            fnmatch.fnmatchcase(k, p) for k in expected if k not in state)]
        if idle:
            raise CliError(f'pretrained_new_keys[{module_path!r}]: {idle} match no key of '
                           f'{module_path} that {path!r} lacks; remove them')
        unexpected = [k for k in state if k not in expected and not (
            k.endswith('.mask') and k[:-len('mask')] + 'weight' in expected)]
        if wrong or missing or unexpected:
            parts = [f'{len(items)} {what} (e.g. {items[0]})' for what, items in
                     (('keys of other shapes', wrong), ('missing keys', missing),
                      ('unexpected keys', unexpected)) if items]
            raise CliError(
                f'{key} {path!r} does not fit {module_path or "the model"} '
                f'({type(module).__name__}): ' + ', '.join(parts) + '. The checkpoint is of '
                'another depth or width: set the config\'s depth / base_channels to the '
                "checkpoint's, or use a checkpoint of this architecture")


def _declared_new_keys(cfg: Config, module_path: str) -> List[str]:
    """Patterns of ``module_path``'s keys that its checkpoint lacks by design.

    A config declares them in ``pretrained_new_keys = dict(backbone=['norm0.*', ...])``: e.g.
    a detector's backbone has an output norm per FPN level where the classifier whose
    checkpoint initialises it has one after its last stage. Every other key must load.
    """
    declared = cfg.get('pretrained_new_keys') or {}
    if not isinstance(declared, dict) or not all(
            isinstance(v, (list, tuple)) and all(isinstance(p, str) for p in v)
            for v in declared.values()):
        raise CliError('pretrained_new_keys must be a dict of module path -> list of key '
                       f"patterns, e.g. dict(backbone=['norm0.*']), got {declared!r}")
    return list(declared.get(module_path, ()))


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


def build_config(args) -> Config:
    """The config of a train or test tool after the flags every tool shares.

    Loads ``args.config`` (:func:`load_config`), records ``args.launcher``, merges
    ``args.cfg_options`` and sets ``work_dir``: ``args.work_dir``, else the config's own, else
    ``./work_dirs/<config name>``. Each tool then handles its own flags.

    Args:
        args (argparse.Namespace): With ``config``, ``launcher``, ``cfg_options`` and
            ``work_dir``.

    Returns:
        Config: The config.
    """
    cfg = load_config(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def resolve_resume(cfg: Config, resume: str) -> str:
    """The checkpoint that ``--resume`` continues, checked before anything is written.

    ``resume='auto'`` (``--resume`` without a path) takes the file that ``WORK_DIR/
    last_checkpoint`` names, as MMEngine does; with no ``last_checkpoint`` MMEngine trains from
    scratch, and so does the tool (returns None). The checkpoint must be a complete PyTorch file
    (:func:`check_checkpoint_file`) saved from the same model and sparsity settings as ``cfg``
    (:func:`check_resume_matches`).

    Args:
        cfg (Config): The config to train (``work_dir`` set).
        resume (str): ``'auto'`` or a checkpoint path.

    Returns:
        str | None: The checkpoint path, or None to start from scratch.
    """
    if resume == 'auto':
        pointer = osp.join(cfg.work_dir, 'last_checkpoint')
        if not osp.isfile(pointer):
            return None
        with open(pointer, encoding='utf-8') as f:
            path = f.read().strip()
        if not path:
            raise CliError(f'{pointer} is empty; pass --resume WORK_DIR/epoch_N.pth, or delete '
                           f'{pointer} to train from scratch')
        try:
            check_checkpoint_file(path)
        except CliError as err:
            raise CliError(f'{pointer} names {path!r}, which cannot be resumed ({err.message}); '
                           f'pass --resume with another checkpoint of {cfg.work_dir}, or delete '
                           f'{pointer} to train from scratch') from err
    else:
        path = resume
        check_checkpoint_file(path)
    check_resume_matches(cfg, path)
    return path


def _model_signature(model: dict) -> dict:
    """The settings of a model config that a resumed checkpoint must share: the model (and
    wrapped detector/classifier) type, the backbone's type and size, the sparsity method and
    N:M, flattened to ``{'model.backbone.depth': 18, ...}``."""
    from mmdet_maxq.models.sparsify import SparsitySettings

    sig = {'model.type': model.get('type')}
    backbone = model.get('backbone')
    for key in ('detector', 'classifier'):
        inner = model.get(key)
        if isinstance(inner, str):
            sig[f'model.{key}'] = inner
        elif isinstance(inner, dict):
            sig[f'model.{key}.type'] = inner.get('type')
            backbone = inner.get('backbone', backbone)
    if isinstance(backbone, dict):
        for key in ('type', 'depth', 'arch', 'base_channels', 'widen_factor', 'deepen_factor'):
            if key in backbone:
                sig[f'model.backbone.{key}'] = backbone[key]
    sparsity = model.get('sparsity')
    if sparsity is not None or str(model.get('type', '')).startswith('Sparse'):
        sparsity = dict(sparsity or {})
        for key in ('method', 'n', 'm'):
            sig[f'model.sparsity.{key}'] = sparsity.get(key, getattr(SparsitySettings, key))
    return sig


def _checkpoint_meta(path: str) -> dict:
    """The ``meta`` dict of a local checkpoint, or one ``CliError`` naming why it cannot be read."""
    try:
        return checkpoint_meta(path)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as err:
        raise CliError(f'checkpoint {path!r} cannot be read ({type(err).__name__}: '
                       f'{str(err).splitlines()[0]}): damaged, truncated, or holding objects '
                       'that torch.load(weights_only=True) refuses; resume from an earlier '
                       'checkpoint of the work dir') from err


def check_resume_matches(cfg: Config, path: str) -> None:
    """Refuse to resume from a checkpoint of another model or other sparsity settings.

    MMEngine loads a resumed state dict non-strictly, so another model (or other N:M) would
    train on with a warning at best. The checkpoint's own config (``meta['cfg']``, which
    MMEngine saves) is compared with ``cfg`` on :func:`_model_signature`. Remote checkpoints
    and checkpoints without a saved config are not checked.

    Args:
        cfg (Config): The config to train.
        path (str): The checkpoint to resume.
    """
    if is_remote(path):
        return
    text = _checkpoint_meta(osp.expanduser(path)).get('cfg')
    if not isinstance(text, str):
        return
    try:
        saved = Config.fromstring(text, file_format='.py')
    except (SyntaxError, KeyError, ValueError, ImportError, TypeError) as err:
        raise CliError(f'checkpoint {path!r}: its saved config cannot be parsed '
                       f'({type(err).__name__}: {err}), so it cannot be checked against the '
                       'config to resume; resume with a checkpoint this version wrote') from err
    ours, theirs = _model_signature(cfg.model), _model_signature(saved.get('model', {}))
    differ = [key for key in sorted(set(ours) | set(theirs)) if ours.get(key) != theirs.get(key)]
    if differ:
        pairs = ', '.join(f'{key}={theirs.get(key)!r} there but {ours.get(key)!r} here'
                          for key in differ)
        raise CliError(f'checkpoint {path!r} was trained with another model or sparsity than '
                       f'this config ({pairs}); resume it with the config it was trained with, '
                       'or start a new run (a new --work-dir, and --cfg-options '
                       f'load_from={path} to start from its weights)')

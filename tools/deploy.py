"""Fold a trained sparse model into a plain MMDetection / mmpretrain checkpoint, exact N:M.

CONFIG is a sparse detector (``type='SparseDetector'``) or classifier
(``type='SparseClassifier'``) config; the kind follows from its model type. Writes OUT (the
plain model's checkpoint) and, beside it, OUT with ``.py`` (its config), after verifying from
temporary files that (a) every folded conv and linear layer is exactly N:M, (b) plain
MMDetection (mmpretrain for a classifier) builds the config and loads the checkpoint strictly
and (c) the plain model's predictions on sample images equal the sparse model's, both on
``--device`` with TF32 off, within a relative tolerance (``--tol``). On failure nothing is
written. Masks are recomputed at preserve rate 0 before folding, so any checkpoint of the
schedule exports an exact N:M model. The config is CONFIG (after ``--cfg-options``) with the
plain model's own type (``MaskRCNN``, ``ImageClassifier``), without this package's
``custom_imports``, hooks and DDP wrapper, with a top-level ``test_pipeline``: the
verification loads both files in a process where ``mmdet_maxq`` cannot be imported::

    python tools/deploy.py CONFIG CHECKPOINT deploy/model.pth
    python tools/test.py deploy/model.py deploy/model.pth
"""
import argparse
import sys

from mmengine.config import DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from rich.console import Console
from rich.progress import track
from rich.table import Table

import mmdet_maxq  # noqa: F401  registers the wrapper, fixes checkpoint loading
from mmdet_maxq.cli import CliError, check_checkpoint_file, load_config
from mmdet_maxq.deploy import (CLASSIFIER, DEFAULT_TOLERANCE, DeployError, VerificationError,
                               VerificationReport, check_sparse_config, deploy_paths,
                               export_verified)
from mmdet_maxq.models import SparseConv2d, sparse_layers, sparsity_settings
from mmdet_maxq.utils.config_utils import model_config


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help="the sparse detector or classifier config "
                        "(type='SparseDetector' or 'SparseClassifier')")
    parser.add_argument('checkpoint', help='the trained checkpoint')
    parser.add_argument('out', help='checkpoint to write, e.g. deploy/model.pth (the config is '
                        'written beside it, e.g. deploy/model.py)')
    parser.add_argument('--overwrite', action='store_true', help='replace existing outputs')
    parser.add_argument('--num-images', type=int, default=4,
                        help='sample images for the prediction check (default 4)')
    parser.add_argument('--tol', '--atol', dest='tol', type=float, default=DEFAULT_TOLERANCE,
                        help='relative tolerance of the prediction check: boxes may differ by '
                        'tol * max(1, largest |coordinate|), scores by tol (default '
                        f'{DEFAULT_TOLERANCE:g})')
    parser.add_argument('--device', default='cpu',
                        help='device of the sparse and of the plain model in the check '
                        '(default cpu), e.g. cuda')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs')
    return parser.parse_args(argv)


def _mismatch_summary(message: str, shown: int = 3) -> str:
    """mmengine's strict-load error in one line: each kind of mismatch, its count, a few keys."""
    groups = {}
    for line in message.strip().splitlines():
        line = line.strip()
        if line.startswith('size mismatch for '):
            groups.setdefault('shape mismatch', []).append(line[18:].split(':')[0])
        elif line.endswith('state_dict') or ' state_dict: ' in line:
            head, _, keys = line.partition(': ')
            groups.setdefault(head.replace(' in source state_dict', ''), []).extend(
                k.strip() for k in keys.split(',') if k.strip())
    parts = [f'{kind} ({len(keys)}): {", ".join(keys[:shown])}' + (' ...' if len(keys) > shown
                                                                   else '')
             for kind, keys in groups.items()]
    return '; '.join(parts) or message.strip().splitlines()[-1]


def _progress(items, description):
    return track(items, description=description, transient=True)


def print_report(console: Console, report: VerificationReport) -> None:
    """Print the checks and the per-image comparison as tables."""
    table = Table(title='deploy verification')
    for col in ('check', 'result', 'detail'):
        table.add_column(col)
    for check in report.checks:
        table.add_row(f'({"abc"[["nm", "load", "predictions"].index(check.key)]}) {check.title}',
                      '[green]PASS[/green]' if check.passed else '[red]FAIL[/red]', check.detail)
    console.print(table)
    if report.images and report.kind == CLASSIFIER.name:
        table = Table(title=f'predictions on {report.image_source}')
        for col in ('image', 'same class', 'max |score| diff', 'rel. feature diff', 'ok'):
            table.add_column(col)
        for row in report.images:
            table.add_row(row.image, str(row.labels_equal), f'{row.score_diff:.2e}',
                          f'{row.feature_diff:.2e}', 'yes' if row.passed else '[red]no[/red]')
        console.print(table)
    elif report.images:
        table = Table(title=f'predictions on {report.image_source}')
        for col in ('image', 'detections (sparse / plain)', 'labels equal', 'rel. |box| diff',
                    'max |score| diff', 'rel. feature diff', 'mask pixels differing', 'ok'):
            table.add_column(col)
        for row in report.images:
            table.add_row(row.image, f'{row.detections} / {row.plain_detections}',
                          str(row.labels_equal), f'{row.box_diff:.2e}', f'{row.score_diff:.2e}',
                          f'{row.feature_diff:.2e}',
                          '-' if row.mask_diff is None else f'{row.mask_diff:.2%}',
                          'yes' if row.passed else '[red]no[/red]')
        console.print(table)


def main(argv=None):
    """Run the tool.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.

    Returns:
        ExportResult: What was written.
    """
    args = parse_args(argv)
    try:
        deploy_paths(args.out, args.overwrite)  # fail before loading anything
    except DeployError as err:
        raise CliError(str(err)) from None
    except FileExistsError as err:
        raise CliError(f'{err} or choose another OUT') from None
    if args.num_images < 1:
        raise CliError(f'--num-images must be >= 1, got {args.num_images}')
    if not args.tol >= 0:
        raise CliError(f'--tol must be >= 0, got {args.tol}')
    cfg = load_config(args.config)
    check_checkpoint_file(args.checkpoint)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        kind = check_sparse_config(cfg)
    except DeployError as err:
        raise CliError(f'{args.config}: {err}') from None
    init_default_scope(cfg.get('default_scope', kind.package))
    registry = kind.registry()
    if registry.get(kind.sparse_type) is None:
        raise CliError(f'{args.config}: {kind.sparse_type} is not registered in '
                       f'{kind.package}.registry.MODELS; this install of mmdet_maxq cannot '
                       f'build a sparse {kind.name}')
    # A copy (DETR-family constructors write into their bbox_head dict, and the config is
    # written out below), with the top-level data_preprocessor as the Runner merges it.
    model = registry.build(model_config(cfg))
    if sparsity_settings(model) is None:
        raise CliError(f'{args.config} builds a plain {type(model).__name__}, not a sparse '
                       f'{kind.name}')
    try:
        checkpoint = load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True,
                                     logger='current')
    except (RuntimeError, KeyError) as err:
        raise CliError(f'checkpoint {args.checkpoint} does not match the config\'s model '
                       f'({_mismatch_summary(str(err))}); pass the checkpoint this config '
                       'trained') from None
    model.to(args.device)
    console = Console(width=max(Console().width, 150))
    try:
        result = export_verified(model, cfg, args.out, source_checkpoint=args.checkpoint,
                                 source_meta=checkpoint.get('meta'),
                                 num_images=args.num_images, tol=args.tol,
                                 overwrite=args.overwrite, progress=_progress)
    except DeployError as err:
        raise CliError(str(err)) from None
    except VerificationError as err:
        print_report(console, err.report)
        console.print(f'[red]error:[/red] {err}')
        sys.exit(1)
    print_report(console, result.report)
    s = sparsity_settings(model)
    if result.remasked:
        console.print(f'note: {len(result.remasked)} of {len(result.folded)} masks recomputed at '
                      'preserve rate 0 differ from the checkpoint\'s (saved mid-schedule or '
                      'before the last optimizer step); the export follows the recomputed ones')
    what = 'convs' if all(isinstance(layer, SparseConv2d)
                          for _, layer in sparse_layers(model)) else 'layers'
    console.print(f'folded {len(result.folded)} {s.method} {s.n}:{s.m} {what}; wrote '
                  f'{result.checkpoint} and {result.config}\nrun it with plain '
                  f'{"mmpretrain" if kind is CLASSIFIER else "MMDetection"}\'s tools/test.py: '
                  f'python tools/test.py {result.config} {result.checkpoint}')
    return result


if __name__ == '__main__':
    main()

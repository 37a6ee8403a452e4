"""Per-layer, per-stage and per-block N:M sparsity report of a sparse detector or classifier
checkpoint: the backbone's convs and linear layers, their weights and MACs.

Example::

    python tools/sparsity_report.py CONFIG CHECKPOINT [--plot sparsity.png] [--layers] [--blocks]
"""
import argparse

import torch
from mmengine.config import DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from rich.console import Console
from rich.progress import track
from rich.table import Table

import mmdet_maxq  # noqa: F401
from mmdet_maxq.analysis import block_totals, layer_macs, report_layers, report_rows, stage_totals
from mmdet_maxq.cli import CliError, check_checkpoint_file, load_config
from mmdet_maxq.deploy.kinds import find_sparse_kind
from mmdet_maxq.models import refresh_masks, sparse_layers, sparsity_settings
from mmdet_maxq.utils.atomic import check_new_path, write_new_file
from mmdet_maxq.utils.config_utils import model_config, pipeline_test_scale


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='N:M sparsity report of a sparse detector or classifier checkpoint')
    parser.add_argument('config', help='the sparse detector or classifier config')
    parser.add_argument('checkpoint', help='checkpoint to measure')
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('H', 'W'),
                        help='image size for the MAC count (default: the test resize scale)')
    parser.add_argument('--layers', action='store_true', help='also print the per-layer table')
    parser.add_argument('--blocks', action='store_true',
                        help='also print the per-block table (residual and transformer blocks, '
                        'e.g. backbone.layer1.0, backbone.stages.0.blocks.1, backbone.layers.3)')
    parser.add_argument('--plot', help='write per-layer sparsity and soft-multiplier plots (PNG)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --plot file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs')
    return parser.parse_args(argv)


def _plot(rows, model, path, overwrite=False):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8, len(rows) * 0.18), 8))
    ax1.bar(range(len(rows)), [r.sparsity for r in rows],
            color=['tab:blue' if r.compliant else 'tab:gray' for r in rows])
    ax1.set_xticks(range(len(rows)))
    ax1.set_xticklabels([r.name.replace('backbone.', '') for r in rows], rotation=90,
                        fontsize=6)
    ax1.set_ylabel('weight sparsity')
    ax1.set_title('per-layer sparsity (blue: exactly N:M)')
    values = [conv.mask[conv.mask > 0].flatten().float().cpu() for _, conv in sparse_layers(model)]
    if values:
        ax2.hist(torch.cat(values).numpy(), bins=50, range=(1, 3))
    ax2.set_xlabel('soft multiplier of kept weights (1 + F + P)')
    ax2.set_ylabel('weights')
    fig.tight_layout()
    write_new_file(path, lambda f: fig.savefig(f, format='png', dpi=120), overwrite=overwrite)


def _totals_table(title, group, totals):
    """A rich table of :func:`~mmdet_maxq.analysis.group_totals` rows."""
    table = Table(title=title)
    linear = any(t['linear'] for t in totals.values())
    for col in (group, 'layers' if linear else 'convs') + (('linear', ) if linear else ()) + (
            'sparse', 'exactly N:M', 'params', 'non-zero', 'sparsity', 'GMACs dense',
            'GMACs N:M', 'MAC reduction'):
        table.add_column(col)
    for key, t in totals.items():
        table.add_row(key, str(t['layers']), *((str(t['linear']), ) if linear else ()),
                      str(t['sparse']), str(t['compliant']),
                      f"{t['params'] / 1e6:.3f}M", f"{t['nonzero'] / 1e6:.3f}M",
                      f"{1 - t['nonzero'] / t['params']:.1%}", f"{t['macs'] / 1e9:.3f}",
                      f"{t['sparse_macs'] / 1e9:.3f}",
                      f"{1 - t['sparse_macs'] / t['macs']:.1%}" if t['macs'] else '-')
    return table


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config)
    check_checkpoint_file(args.checkpoint)
    if args.plot:
        try:
            check_new_path(args.plot, args.overwrite)
        except FileExistsError as err:
            raise CliError(f'--plot: {err}') from err
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    kind = find_sparse_kind(cfg.get('model'))
    if kind is None:
        raise CliError(f'{args.config} is not a SparseDetector or SparseClassifier config; '
                       'nothing to report')
    init_default_scope(cfg.get('default_scope', kind.package))
    model = kind.registry().build(model_config(cfg))
    load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True, logger='current')
    settings = sparsity_settings(model)
    if settings is None:
        raise CliError(f'{args.config} builds a plain {type(model).__name__}; nothing to report')
    # The deployed model's masks: every block N:M, recomputed from the loaded weights.
    model.eval()
    refresh_masks(model, 0.0)
    layers = report_layers(model, 'backbone.')
    size = tuple(args.input_size) if args.input_size else pipeline_test_scale(cfg)
    macs = layer_macs(model.backbone,
                      {name[len('backbone.'):]: mod for name, mod in layers.items()}, size)
    macs = {'backbone.' + name: value for name, value in macs.items()}
    rows = report_rows(layers, settings.n, settings.m, macs,
                       progress=lambda items: track(items, description='measuring layers'))
    console = Console(width=max(Console().width, 150))
    if args.layers:
        table = Table(title=f'{args.checkpoint}: layers')
        for col in ('layer', 'shape', 'N:M', 'eligible', 'compliant', 'sparsity', 'mean mult.',
                    'type', 'MMACs'):
            table.add_column(col)
        for r in rows:
            table.add_row(r.name, 'x'.join(map(str, r.shape)), r.nm, str(r.eligible),
                          str(r.compliant), f'{r.sparsity:.3f}',
                          '-' if r.mean_multiplier is None else f'{r.mean_multiplier:.3f}',
                          r.kind, f'{r.macs / 1e6:.3f}')
        console.print(table)
    title = (f'{settings.method} {settings.n}:{settings.m} backbone sparsity '
             f'(MACs at {size[0]}x{size[1]})')
    console.print(_totals_table(title, 'stage', stage_totals(rows)))
    if args.blocks:
        console.print(_totals_table(title + ', per block', 'block', block_totals(rows)))
    eligible = [r for r in rows if r.eligible]
    compliant = sum(r.compliant for r in eligible)
    what = 'convs' if all(r.kind == 'conv' for r in rows) else 'layers'
    console.print(f'{compliant} of {len(eligible)} N:M-eligible backbone {what} are exactly '
                  f'{settings.n}:{settings.m}; dense (ineligible): '
                  + (', '.join(r.name for r in rows if not r.eligible) or 'none'))
    if args.plot:
        _plot(rows, model, args.plot, args.overwrite)
        console.print(f'plot written to {args.plot}')
    return rows


if __name__ == '__main__':
    main()

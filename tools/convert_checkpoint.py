"""Convert a sparse ImageNet ResNet checkpoint into an MMDetection backbone checkpoint.

Formats: the MaxQ paper's classification code (``maxq``), torchvision state dicts, and
mmpretrain checkpoints; ``--format auto`` tells them apart from their keys. The output loads
into MMDetection's ResNet with no missing or unexpected keys::

    python tools/convert_checkpoint.py maxq_r50_2of8.pth checkpoints/r50_2of8_backbone.pth \\
        --n 2 --m 8
    # then, in a config (a SparseDetector config keeps the detector's model.backbone):
    model = dict(backbone=dict(init_cfg=dict(
        type='Pretrained', checkpoint='checkpoints/r50_2of8_backbone.pth')))

Fold or not (``--method``, default ``maxq``): for MaxQ fine-tuning the raw weights ``W`` are
imported and the stored masks dropped, because the detector recomputes ``S(W)`` and so starts
from the ImageNet model's own forward ``W * S(W)`` (folding first would apply the soft
multipliers twice). ``--method srste`` (``W * L`` is a fixed point of the hard mask) and
``--method dense`` (a dense or deployed model) fold the masks into the weights, which must then
be exactly N:M in every masked layer (else the tool stops and suggests the right ``--n/--m`` or
``--no-fold``). ``--fold`` / ``--no-fold`` override the method's default. The output ``meta``
records ``method``, ``folded``, ``n``, ``m``, ``source_format`` and the backbone widths.
"""
import argparse

from rich.console import Console
from rich.progress import track
from rich.table import Table

from mmdet_maxq.checkpoint import (FORMATS, METHODS, CheckpointError, ConversionResult,
                                   convert_checkpoint)
from mmdet_maxq.cli import CliError


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='source checkpoint (.pth)')
    parser.add_argument('dst', help='output backbone checkpoint (.pth)')
    parser.add_argument('--n', type=int, required=True, help='non-zeros kept per block')
    parser.add_argument('--m', type=int, required=True, help='block size (input channels)')
    parser.add_argument('--format', default='auto', choices=('auto', ) + FORMATS,
                        help='source format (default: detect from the keys)')
    parser.add_argument('--method', default='maxq', choices=METHODS,
                        help='what the backbone is fine-tuned with; picks whether stored masks '
                        'are folded: maxq (default) imports the raw weights (the detector '
                        'recomputes the masks), srste and dense fold W * mask')
    parser.add_argument('--fold', action=argparse.BooleanOptionalAction, default=None,
                        help='fold the stored masks into the weights (--fold) or import the raw '
                        'weights (--no-fold), overriding the default of --method')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing dst')
    return parser.parse_args(argv)


def stage_table(result: ConversionResult, n: int, m: int) -> Table:
    """The per-stage summary table.

    Args:
        result (ConversionResult): The conversion report.
        n (int): Non-zeros per block.
        m (int): Block size.

    Returns:
        rich.table.Table: One row per stage and a total row.
    """
    table = Table(title=f'ResNet-{result.depth} backbone ({result.source_format} format), {n}:{m}')
    for name in ('stage', 'conv layers', f'eligible (C % {m} == 0)', f'exactly {n}:{m}',
                 'masks folded' if result.checkpoint['meta']['folded'] else 'masks'):
        table.add_column(name, justify='left' if name == 'stage' else 'right')
    raw_masks = not result.checkpoint['meta']['folded'] and any(r.masked for r in result.layers)
    if raw_masks:  # the weights are raw: say whether the dropped masks were N:M
        table.add_column(f'{n}:{m} masks (dropped)', justify='right')
    for row in result.stages:
        cells = [row.stage, str(row.layers), str(row.eligible), str(row.nm), str(row.masked)]
        table.add_row(*cells, *([str(row.mask_nm)] if raw_masks else []),
                      end_section=row.stage == 'layer4')
    return table


def main(argv=None) -> ConversionResult:
    """Run the tool.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.

    Returns:
        ConversionResult: The conversion report.
    """
    args = parse_args(argv)
    console = Console()
    err_console = Console(stderr=True)

    def progress(names):
        return track(names, description='checking layers', console=err_console, transient=True)

    try:
        result = convert_checkpoint(args.src, args.dst, args.n, args.m, fmt=args.format,
                                    fold=args.fold, overwrite=args.overwrite, track=progress,
                                    method=args.method)
    except (CheckpointError, FileExistsError) as err:
        raise CliError(str(err)) from err
    console.print(stage_table(result, args.n, args.m))
    # soft_wrap: one line each, however narrow the terminal (logs are grepped)
    console.print(f'--method {args.method}: {result.decision}', markup=False, soft_wrap=True)
    if result.dropped:
        console.print(f'dropped {len(result.dropped)} non-backbone keys: '
                      f'{", ".join(result.dropped[:4])}{" ..." if len(result.dropped) > 4 else ""}',
                      markup=False)
    if result.filled:
        console.print(f'filled {len(result.filled)} missing BN num_batches_tracked with 0')
    for warning in result.warnings:
        err_console.print(f'warning: {warning}', markup=False, style='yellow', soft_wrap=True)
    console.print(f'wrote {args.dst}', markup=False)
    return result


if __name__ == '__main__':
    main()

"""Convert a sparse ImageNet ResNet checkpoint into an MMDetection backbone checkpoint.

Formats: the MaxQ paper's classification code (``maxq``), torchvision state dicts, and
mmpretrain checkpoints; ``--format auto`` tells them apart from their keys. The output loads
into MMDetection's ResNet with no missing or unexpected keys::

    python tools/convert_checkpoint.py maxq_r50_2of8.pth checkpoints/r50_2of8_backbone.pth \\
        --n 2 --m 8
    # then, in a config (a SparseDetector's backbone is model.architecture.backbone):
    model = dict(backbone=dict(init_cfg=dict(
        type='Pretrained', checkpoint='checkpoints/r50_2of8_backbone.pth')))

With ``--fold`` (default) the paper's masks are multiplied into the weights, which must then be
exactly N:M in every masked layer (else the tool stops and suggests the right ``--n/--m`` or
``--no-fold``). ``--no-fold`` keeps the raw weights and drops the masks.
"""
import argparse

from rich.console import Console
from rich.progress import track
from rich.table import Table

from mmdet_maxq.checkpoint import FORMATS, CheckpointError, ConversionResult, convert_checkpoint
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
    parser.add_argument('--fold', action=argparse.BooleanOptionalAction, default=True,
                        help='fold the stored MaxQ masks into the weights (default: on)')
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
    for row in result.stages:
        table.add_row(row.stage, str(row.layers), str(row.eligible), str(row.nm),
                      str(row.masked), end_section=row.stage == 'layer4')
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
        result = convert_checkpoint(args.src, args.dst, args.n, args.m, args.format, args.fold,
                                    args.overwrite, track=progress)
    except (CheckpointError, FileExistsError) as err:
        raise CliError(str(err)) from err
    console.print(stage_table(result, args.n, args.m))
    if result.dropped:
        console.print(f'dropped {len(result.dropped)} non-backbone keys: '
                      f'{", ".join(result.dropped[:4])}{" ..." if len(result.dropped) > 4 else ""}',
                      markup=False)
    if result.filled:
        console.print(f'filled {len(result.filled)} missing BN num_batches_tracked with 0')
    for warning in result.warnings:
        err_console.print(f'warning: {warning}', markup=False, style='yellow')
    console.print(f'wrote {args.dst}', markup=False)
    return result


if __name__ == '__main__':
    main()

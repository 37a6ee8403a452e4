"""Print the COCO box/mask AP of MMDetection work dirs as a Markdown table (the paper's layout).

Each WORK_DIR contributes one row: its newest ``tools/test.py`` results, else the last
validation during training; model, method and N:M come from the config dump in the work dir::

    python tools/ap_table.py work_dirs/mask-rcnn_r50_dense work_dirs/mask-rcnn_r50_maxq-2of8 \\
        --out results.md
"""
import argparse
import sys

from mmdet_maxq.analysis.ap_table import ResultsError, collect_rows, format_percent, format_table
from mmdet_maxq.cli import CliError
from mmdet_maxq.utils.atomic import check_new_path, write_new_file


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dirs', nargs='+', metavar='WORK_DIR', help='MMDetection work dirs')
    parser.add_argument('--out', help='also write the table to this Markdown file')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out file')
    parser.add_argument('--skip-missing', action='store_true',
                        help='warn about work dirs without results instead of stopping')
    return parser.parse_args(argv)


def main(argv=None) -> str:
    """Run the tool.

    Args:
        argv (list[str], optional): Arguments; ``sys.argv[1:]`` when None.

    Returns:
        str: The Markdown table.
    """
    args = parse_args(argv)
    try:
        if args.out:
            check_new_path(args.out, args.overwrite)
        rows, warnings = collect_rows(args.work_dirs, args.skip_missing)
    except (FileExistsError, ResultsError) as err:
        raise CliError(str(err)) from err
    for warning in warnings:
        print(f'warning: {warning}', file=sys.stderr)
    if not rows:
        raise CliError('none of the work dirs has evaluation results; nothing to tabulate')
    for row in rows:
        ev = row.evaluation
        where = f'{ev.kind}' + (f' (step {ev.step})' if ev.step is not None else '')
        print(f'{row.work_dir}: {where} results from {ev.source}, box AP '
              f'{format_percent(row.metrics.get(("bbox", "")))}', file=sys.stderr)
    table = format_table(rows)
    print(table, end='')
    if args.out:
        try:
            write_new_file(args.out, lambda f: f.write(table), binary=False,
                           overwrite=args.overwrite)
        except FileExistsError as err:
            raise CliError(str(err)) from err
        print(f'wrote {args.out}', file=sys.stderr)
    return table


if __name__ == '__main__':
    main()

"""Write the project's deterministic synthetic COCO-format set.

Example::

    python tools/misc/make_synthetic_coco.py data/synthetic_coco --train 64 --val 16 --seed 0
"""
import argparse
import sys

from mmdet_maxq.datasets.synthetic_coco import make_synthetic_coco


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dir', help='folder to create')
    parser.add_argument('--train', type=int, default=64, help='training images')
    parser.add_argument('--val', type=int, default=16, help='validation images')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--max-objects', type=int, default=3, help='most shapes per image')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing out_dir')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        files = make_synthetic_coco(args.out_dir, args.train, args.val, args.seed, args.size,
                                    args.max_objects, args.overwrite)
    except (FileExistsError, ValueError) as err:
        sys.exit(f'error: {err}')
    for split, path in files.items():
        print(f'{split}: {path}')


if __name__ == '__main__':
    main()

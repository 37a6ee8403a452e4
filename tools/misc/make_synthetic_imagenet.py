"""Write the project's deterministic synthetic ImageNet-format classification set.

Example::

    python tools/misc/make_synthetic_imagenet.py data/synthetic_imagenet --classes 4 \
        --train-per-class 16 --val-per-class 4 --size 32 --seed 0
"""
import argparse
import sys

from mmdet_maxq.datasets.synthetic_imagenet import make_synthetic_imagenet


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dir', help='folder to create')
    parser.add_argument('--classes', type=int, default=4, help='number of classes (2-16)')
    parser.add_argument('--train-per-class', type=int, default=16,
                        help='training images per class')
    parser.add_argument('--val-per-class', type=int, default=4,
                        help='validation images per class')
    parser.add_argument('--size', type=int, default=32, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing out_dir')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        files = make_synthetic_imagenet(args.out_dir, args.classes, args.train_per_class,
                                        args.val_per_class, args.size, args.seed,
                                        args.overwrite)
    except (FileExistsError, ValueError) as err:
        sys.exit(f'error: {err}')
    for name, path in files.items():
        print(f'{name}: {path}')


if __name__ == '__main__':
    main()

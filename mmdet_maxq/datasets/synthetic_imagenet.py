"""A deterministic, ImageNet-format synthetic classification set.

Each class is a fixed colour and stripe orientation on a noisy background, so a narrow
network learns it in a few CPU iterations. The layout is ImageNet's as mmpretrain reads it::

    out_dir/train/<class>/NNNNNN.png     out_dir/val/<class>/NNNNNN.png
    out_dir/meta/train.txt               lines 'class/NNNNNN.png LABEL'
    out_dir/meta/val.txt
    out_dir/meta/classes.txt             one class name a line

so ``dict(type='CustomDataset', data_root=out_dir, ann_file='meta/train.txt',
data_prefix='train', classes='meta/classes.txt')`` (or mmpretrain's ``ImageNet`` with its
``metainfo``) loads it. Images are PNG: the same arguments always give the same bytes.
"""
import os
import os.path as osp
from typing import Dict, Tuple

import numpy as np

SPLITS: Tuple[str, ...] = ('train', 'val')
_MAX_CLASSES = 16


def class_names(num_classes: int) -> Tuple[str, ...]:
    """The class (folder) names of a set with ``num_classes`` classes."""
    return tuple(f'class_{i:02d}' for i in range(num_classes))


def _draw(rng: np.random.Generator, label: int, num_classes: int, size: int) -> np.ndarray:
    """One RGB image of class ``label``: its colour and stripe angle, random phase and noise."""
    hue = 2 * np.pi * label / num_classes
    colour = 128 + 90 * np.array([np.cos(hue), np.cos(hue - 2.1), np.cos(hue + 2.1)])
    angle = np.pi * label / num_classes
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * (2 * np.pi / 8) + phase)
    image = colour[None, None, :] * (0.75 + 0.25 * stripes[..., None])
    image = image + rng.normal(0, 10, size=(size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_synthetic_imagenet(out_dir: str,
                            num_classes: int = 4,
                            train_per_class: int = 16,
                            val_per_class: int = 4,
                            image_size: int = 32,
                            seed: int = 0,
                            overwrite: bool = False) -> Dict[str, str]:
    """Write the set to ``out_dir`` (built beside it and renamed into place: all or nothing).

    Args:
        out_dir (str): Folder to create.
        num_classes (int): Classes, 2 to 16. Defaults to 4.
        train_per_class (int): Training images per class. Defaults to 16.
        val_per_class (int): Validation images per class. Defaults to 4.
        image_size (int): Side of the square images in pixels, >= 16. Defaults to 32.
        seed (int): Random seed. Defaults to 0.
        overwrite (bool): Replace an existing ``out_dir``. Defaults to False.

    Returns:
        dict: The annotation files (``train``, ``val``) and the class list (``classes``).
    """
    import cv2

    from mmdet_maxq.utils.atomic import new_directory

    for name, value, low, high in (('num_classes', num_classes, 2, _MAX_CLASSES),
                                   ('train_per_class', train_per_class, 1, None),
                                   ('val_per_class', val_per_class, 1, None),
                                   ('image_size', image_size, 16, None)):
        if isinstance(value, bool) or int(value) != value or value < low or \
                (high is not None and value > high):
            bound = f'between {low} and {high}' if high is not None else f'>= {low}'
            raise ValueError(f'{name} must be an integer {bound}, got {value!r}')
    out_dir = osp.abspath(out_dir)
    names = class_names(num_classes)
    with new_directory(out_dir, overwrite, flag='overwrite=True (--overwrite)') as staging:
        rng = np.random.default_rng(seed)
        os.makedirs(osp.join(staging, 'meta'))
        with open(osp.join(staging, 'meta', 'classes.txt'), 'w') as f:
            f.write(''.join(name + '\n' for name in names))
        index = 0
        for split, per_class in zip(SPLITS, (train_per_class, val_per_class)):
            lines = []
            for _ in range(per_class):
                for label, name in enumerate(names):
                    index += 1
                    rel = f'{name}/{index:06d}.png'
                    path = osp.join(staging, split, rel)
                    os.makedirs(osp.dirname(path), exist_ok=True)
                    image = _draw(rng, label, num_classes, image_size)
                    if not cv2.imwrite(path, image[..., ::-1]):
                        raise OSError(f'cannot write {path}')
                    lines.append(f'{rel} {label}\n')
            with open(osp.join(staging, 'meta', f'{split}.txt'), 'w') as f:
                f.write(''.join(lines))
    files = {split: osp.join(out_dir, 'meta', f'{split}.txt') for split in SPLITS}
    files['classes'] = osp.join(out_dir, 'meta', 'classes.txt')
    return files

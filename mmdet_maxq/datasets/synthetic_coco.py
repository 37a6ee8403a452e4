"""A deterministic, COCO-format synthetic detection set.

Images hold a few non-overlapping filled shapes on a noisy background. Every shape is drawn
from its own polygon, so the polygon ``segmentation``, the ``bbox`` and the ``area`` of each
annotation describe exactly the pixels that were painted. The set is made for tests and demos:
no download exists on the project's machines, and MMDetection's ``CocoDataset`` and
``CocoMetric`` read and score it like the real COCO.
"""
import json
import math
import os
import os.path as osp
from typing import Dict, List, Tuple

import numpy as np

from mmdet_maxq.utils.atomic import new_directory

CATEGORIES: Tuple[str, ...] = ('rectangle', 'ellipse', 'triangle')
# One base colour per category keeps the task learnable in a few hundred CPU iterations.
_BASE_COLOURS = np.array([[220, 60, 60], [60, 200, 60], [60, 90, 230]], dtype=np.float64)
SPLITS: Tuple[str, ...] = ('train', 'val')


def _polygon(kind: int, cx: float, cy: float, w: float, h: float,
             rng: np.random.Generator) -> np.ndarray:
    """Vertices (K, 2) of one shape centred at (cx, cy) inside a w x h box."""
    if kind == 0:
        return np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy - h / 2],
                         [cx + w / 2, cy + h / 2], [cx - w / 2, cy + h / 2]])
    if kind == 1:
        angles = np.linspace(0, 2 * math.pi, 24, endpoint=False)
        return np.stack([cx + w / 2 * np.cos(angles), cy + h / 2 * np.sin(angles)], axis=1)
    apex = cx + (rng.random() - 0.5) * w
    return np.array([[apex, cy - h / 2], [cx + w / 2, cy + h / 2], [cx - w / 2, cy + h / 2]])


def _draw_image(rng: np.random.Generator, size: int, max_objects: int
                ) -> Tuple[np.ndarray, List[Dict]]:
    import cv2

    base = rng.uniform(90, 160, size=3)
    image = np.clip(base + rng.normal(0, 12, size=(size, size, 3)), 0, 255).astype(np.uint8)
    occupied = np.zeros((size, size), dtype=bool)
    objects = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            kind = int(rng.integers(len(CATEGORIES)))
            w = rng.uniform(0.2, 0.45) * size
            h = rng.uniform(0.2, 0.45) * size
            cx = rng.uniform(w / 2 + 1, size - w / 2 - 1)
            cy = rng.uniform(h / 2 + 1, size - h / 2 - 1)
            poly = np.round(_polygon(kind, cx, cy, w, h, rng), 1)
            shape_mask = np.zeros((size, size), dtype=np.uint8)
            cv2.fillPoly(shape_mask, [np.round(poly).astype(np.int32)], 1)
            shape_mask = shape_mask.astype(bool)
            # Keep a margin so shapes never touch: masks stay exactly their polygons.
            grown = cv2.dilate(shape_mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            if shape_mask.sum() < 16 or (grown & occupied).any():
                continue
            occupied |= grown
            colour = np.clip(_BASE_COLOURS[kind] + rng.normal(0, 15, size=3), 0, 255)
            image[shape_mask] = colour.astype(np.uint8)
            ys, xs = np.nonzero(shape_mask)
            x0, y0 = float(xs.min()), float(ys.min())
            objects.append(dict(
                category_id=kind + 1,
                bbox=[x0, y0, float(xs.max()) - x0 + 1, float(ys.max()) - y0 + 1],
                area=float(shape_mask.sum()),
                segmentation=[[float(v) for v in poly.reshape(-1)]],
                iscrowd=0))
            break
    return image, objects


def make_synthetic_coco(out_dir: str,
                        num_train: int = 64,
                        num_val: int = 16,
                        seed: int = 0,
                        image_size: int = 128,
                        max_objects: int = 3,
                        overwrite: bool = False) -> Dict[str, str]:
    """Write a deterministic COCO-format set to ``out_dir``.

    Layout: ``out_dir/{train,val}/NNNNNN.jpg`` and
    ``out_dir/annotations/instances_{train,val}.json``. The same arguments always give the same
    files (byte for byte for the JSON; JPEG encoding is deterministic for a given OpenCV build).
    The set is built in a temporary folder beside ``out_dir`` and renamed into place, so an
    interrupted run leaves nothing half-written.

    Args:
        out_dir (str): Folder to create.
        num_train (int): Number of training images. Defaults to 64.
        num_val (int): Number of validation images. Defaults to 16.
        seed (int): Random seed. Defaults to 0.
        image_size (int): Side of the square images in pixels. Defaults to 128.
        max_objects (int): Most shapes per image (at least one each). Defaults to 3.
        overwrite (bool): Replace an existing ``out_dir``. Defaults to False.

    Returns:
        dict: Paths of the written annotation files, keyed by split.
    """
    import cv2

    for name, value, low in (('num_train', num_train, 1), ('num_val', num_val, 1),
                             ('image_size', image_size, 32), ('max_objects', max_objects, 1)):
        if int(value) != value or value < low:
            raise ValueError(f'{name} must be an integer >= {low}, got {value!r}')
    out_dir = osp.abspath(out_dir)
    with new_directory(out_dir, overwrite, flag='overwrite=True (--overwrite)') as staging:
        rng = np.random.default_rng(seed)
        categories = [dict(id=i + 1, name=name, supercategory='shape')
                      for i, name in enumerate(CATEGORIES)]
        os.makedirs(osp.join(staging, 'annotations'))
        image_id = ann_id = 0
        for split, count in zip(SPLITS, (num_train, num_val)):
            os.makedirs(osp.join(staging, split))
            images, annotations = [], []
            for _ in range(count):
                image_id += 1
                image, objects = _draw_image(rng, image_size, max_objects)
                file_name = f'{image_id:06d}.jpg'
                cv2.imwrite(osp.join(staging, split, file_name), image[..., ::-1],
                            [cv2.IMWRITE_JPEG_QUALITY, 95])
                images.append(dict(id=image_id, file_name=file_name,
                                   width=image_size, height=image_size))
                for obj in objects:
                    ann_id += 1
                    annotations.append(dict(id=ann_id, image_id=image_id, **obj))
            with open(osp.join(staging, 'annotations', f'instances_{split}.json'), 'w') as f:
                json.dump(dict(images=images, annotations=annotations,
                               categories=categories), f)
    return {split: osp.join(out_dir, 'annotations', f'instances_{split}.json')
            for split in SPLITS}

from .synthetic_coco import CATEGORIES, make_synthetic_coco

__all__ = ['CATEGORIES', 'make_synthetic_coco']

from .synthetic_coco import CATEGORIES, make_synthetic_coco
from .synthetic_imagenet import make_synthetic_imagenet

__all__ = ['CATEGORIES', 'make_synthetic_coco', 'make_synthetic_imagenet']

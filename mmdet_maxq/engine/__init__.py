from mmdet_maxq import requires_openmmlab  # noqa: F401  (first: a clear error without the stack)
from .hooks import *  # noqa: F401,F403
from .model_wrappers import *  # noqa: F401,F403

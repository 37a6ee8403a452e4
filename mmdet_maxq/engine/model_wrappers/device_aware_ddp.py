"""MMEngine's DDP wrapper, usable for CPU (gloo) runs as well as GPU ones."""
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class DeviceAwareDDP(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that drops ``device_ids`` for a CPU module.

    MMEngine's runner always passes ``device_ids=[LOCAL_RANK]``, which torch refuses for a
    module on the CPU. Select it with ``model_wrapper_cfg=dict(type='DeviceAwareDDP')`` (and
    ``env_cfg.dist_cfg.backend='gloo'``) to train with several CPU processes; on GPUs it is
    ``MMDistributedDataParallel`` unchanged.

    ``broadcast_buffers`` defaults to False, as in MMEngine's own default wrapper config:
    with True, every forward would broadcast rank 0's buffers, the N:M masks among them (as
    large as the sparse weights), although every rank computes the same masks itself.

    Args:
        module (nn.Module): The model to wrap.
        device_ids (list[int], optional): As in ``DistributedDataParallel``; ignored for a
            CPU module. Defaults to None.
        broadcast_buffers (bool): As in ``DistributedDataParallel``. Defaults to False.
        **kwargs: More ``MMDistributedDataParallel`` arguments.
    """

    def __init__(self, module, device_ids=None, broadcast_buffers: bool = False, **kwargs):
        if next(module.parameters()).device.type == 'cpu':
            device_ids = None
        super().__init__(module=module, device_ids=device_ids,
                         broadcast_buffers=broadcast_buffers, **kwargs)

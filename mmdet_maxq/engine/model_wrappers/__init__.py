from .device_aware_ddp import DeviceAwareDDP

__all__ = ['DeviceAwareDDP']

"""The registered detector wrapper that applies N:M sparsity to any MMDetection detector."""
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import MMLogger, print_log
from mmengine.model import BaseModel
from mmdet.registry import MODELS

from .sparse_conv import SparseConv2d
from .sparsify import SparsifyReport, SparsitySettings, sparse_convs, sparsify


@MODELS.register_module()
class SparseDetector(BaseModel):
    """Wrap an MMDetection detector and make the selected convs N:M sparse.

    ``loss``, ``predict`` and ``tensor`` modes and the data preprocessor are the wrapped
    detector's own. The masks are refreshed by :class:`SparsityScheduleHook` once per training
    iteration; without the hook a mask is computed from the weights the first time it is needed.

    A checkpoint of the plain detector (``load_from``, ``init_cfg``) loads into the wrapper: its
    keys are mapped under ``architecture.``, the masks are computed from the loaded weights,
    and the log reports how many keys matched.

    Args:
        architecture (dict | nn.Module): The detector config (or module) to wrap.
        sparsity (dict, optional): See :class:`SparsitySettings`, e.g.
            ``dict(method='maxq', n=2, m=8, layers=['backbone.*'])``. Defaults to MaxQ 2:4 on
            every eligible backbone conv.
        data_preprocessor (dict | nn.Module, optional): Defaults to the detector's.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(self,
                 architecture: Union[dict, nn.Module],
                 sparsity: Optional[dict] = None,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 init_cfg: Optional[dict] = None):
        settings = SparsitySettings.from_cfg(sparsity)
        if isinstance(architecture, dict):
            architecture = MODELS.build(architecture)
        if not isinstance(architecture, BaseModel):
            raise TypeError('architecture must build an mmengine BaseModel (an MMDetection '
                            f'detector), got {type(architecture).__name__}')
        if data_preprocessor is None:
            data_preprocessor = architecture.data_preprocessor
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.architecture = architecture
        self.sparsity = settings
        self.sparsify_report: SparsifyReport = sparsify(self.architecture, settings)
        # Key match of the last plain-detector checkpoint loaded (None until one is).
        self.plain_checkpoint_report: Optional[Dict[str, List[str]]] = None
        self._log_layers()

    def _log_layers(self) -> None:
        s = self.sparsity
        print_log(f'SparseDetector: method={s.method} {s.n}:{s.m} on patterns {list(s.layers)}; '
                  + self.sparsify_report.summary(), logger='current')

    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = 'tensor'):
        return self.architecture(inputs, data_samples, mode)

    def named_sparse_layers(self) -> List[Tuple[str, SparseConv2d]]:
        """``(name, module)`` of each :class:`SparseConv2d`, names relative to the detector."""
        return sparse_convs(self.architecture)

    def sparse_layers(self) -> List[SparseConv2d]:
        """The :class:`SparseConv2d` modules of the wrapped detector, in module order."""
        return [mod for _, mod in self.named_sparse_layers()]

    def set_preserve_rate(self, preserve: float, refresh: bool = True) -> None:
        """Set the incremental-sparsity preserve rate of every sparse conv.

        Args:
            preserve (float): Share of blocks exempt from N:M, in [0, 1].
            refresh (bool): Recompute the masks from the current weights now. Defaults to True.
        """
        for conv in self.sparse_layers():
            if refresh:
                conv.update_mask(preserve)
            else:
                conv.preserve = float(preserve)
                conv.mask_stale = True

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        arch = prefix + 'architecture.'
        keys = [k for k in state_dict if k.startswith(prefix)]
        if keys and not any(k.startswith(arch) for k in keys):
            self._adopt_plain_checkpoint(state_dict, prefix, keys)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _adopt_plain_checkpoint(self, state_dict: Dict, prefix: str, keys: List[str]) -> None:
        """Move a plain detector's keys under ``architecture.`` and report the key match."""
        own = {prefix + 'architecture.' + k for k in self.architecture.state_dict()}
        masks = {k for k in own if k.endswith('.mask')}
        pre_keys = {prefix + 'data_preprocessor.' + k for k in self.data_preprocessor.state_dict()}
        moved = set()
        for key in keys:
            new = prefix + 'architecture.' + key[len(prefix):]
            # The preprocessor is shared by wrapper and detector: its keys serve both.
            state_dict[new] = state_dict[key] if key in pre_keys else state_dict.pop(key)
            moved.add(new)
        matched = moved & own
        if not matched:
            raise KeyError(
                'the checkpoint matches no key of the wrapped detector (e.g. checkpoint key '
                f'{keys[0]!r}); is it a checkpoint of another architecture?')
        missing = sorted(own - moved - masks)
        unexpected = sorted(moved - own)
        self.plain_checkpoint_report = dict(matched=sorted(matched), missing=missing,
                                            unexpected=unexpected)
        lines = [f'SparseDetector: loaded a plain detector checkpoint: {len(matched)} of '
                 f'{len(own - masks)} keys matched; masks are computed from the loaded weights']
        if missing:
            lines.append(f'  missing ({len(missing)}): {", ".join(missing[:10])}'
                         + (' ...' if len(missing) > 10 else ''))
        if unexpected:
            lines.append(f'  unexpected ({len(unexpected)}): {", ".join(unexpected[:10])}'
                         + (' ...' if len(unexpected) > 10 else ''))
        logger = MMLogger.get_current_instance()
        logger.log(30 if missing or unexpected else 20, '\n'.join(lines))

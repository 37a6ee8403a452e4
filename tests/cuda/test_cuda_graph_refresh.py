"""The CUDA-graph mask refresh (``model.sparsity.cuda_graph=True``): replay equals eager.

Marked ``cuda``: ``tests/conftest.py`` skips it where no CUDA device is available.
"""
import pytest
import torch
import torch.nn as nn

from mmdet_maxq.models import SparsitySettings, refresh_masks, sparse_layers, sparsify
from mmdet_maxq.models.mask_refresh import _CACHE_ATTR
from mmdet_maxq.sparsity import maxq_mask, nm_mask
from mmdet_maxq.sparsity.batched import PackedMasks

pytestmark = pytest.mark.cuda


class Backbone(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 1), nn.ReLU(),
            nn.Conv2d(64, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 16, 1))

    def forward(self, x):
        return self.backbone(x)


@pytest.mark.parametrize('method', ['maxq', 'srste'])
@pytest.mark.parametrize('ste', ['soft', 'hard'])
def test_graph_replay_equals_eager_after_optimizer_steps(method, ste):
    torch.manual_seed(0)
    model = Backbone()
    sparsify(model, SparsitySettings(method=method, n=2, m=8, ste=ste, cuda_graph=True,
                                     layers=('backbone.*', )))
    model.cuda().train()
    convs = [conv for _, conv in sparse_layers(model)]
    eager = PackedMasks([tuple(c.weight.shape) for c in convs], 2, 8, method,
                        device=convs[0].weight.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    x = torch.randn(4, 16, 12, 12, device='cuda')
    graphs = set()
    for step, rate in enumerate((0.5, 0.5, 0.25, 0.0, 0.0)):
        for conv in convs:
            conv.set_preserve(rate)
        model(x).square().mean().backward()  # the pre-hook replays the graph
        optimizer.step()
        optimizer.zero_grad()
        # The masks the forward used are those of the weights before the step: recompute the
        # new ones by a replay, and compare with the eager packed and per-conv masks.
        refresh_masks(model)
        want = eager.masks([c.weight.detach() for c in convs], [rate] * len(convs))
        fn = maxq_mask if method == 'maxq' else nm_mask
        for conv, mask in zip(convs, want):
            assert torch.equal(conv.mask, mask), (step, conv.layer_name)
            assert torch.equal(conv.mask, fn(conv.weight.detach(), 2, 8, rate))
        group, = model.__dict__[_CACHE_ATTR].groups.values()
        assert group.graph is not None
        graphs.add(id(group.graph))
    assert len(graphs) == 1  # captured once, replayed at every refresh
    torch.cuda.synchronize()

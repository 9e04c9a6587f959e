"""An nnbench plugin: a two-arm spiral task and a small tanh network.

Load it with `bench ... --plugin examples/spiral_plugin.py`, or name it in a study file
(`plugins = ["spiral_plugin.py"]`, relative to the study file). Plugins are ordinary Python:
nnbench runs this file, so load only plugins you trust.
"""

import numpy as np
import torch
from torch import nn

import bench


@bench.register_task("spiral", kind="binary")
def spiral(data_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """two interleaved spiral arms in 2-D, 600 points, Gaussian noise 0.15"""
    rng = np.random.default_rng(data_seed)
    n = 300  # points per arm
    t = np.sqrt(rng.random(n)) * 3 * np.pi  # angle; sqrt spreads points evenly along the arm
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * np.pi)
    x = np.concatenate([arm, -arm]) + 0.15 * rng.standard_normal((2 * n, 2)) / 3
    y = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64)])
    return x, y


@bench.register_model("tanh_net")
def tanh_net(input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    """a 2-32-32-out tanh network with a skip connection around the second layer"""
    return _TanhNet(int(np.prod(input_shape)), n_outputs)


class _TanhNet(nn.Module):
    def __init__(self, n_in: int, n_out: int, width: int = 32) -> None:
        super().__init__()
        self.first = nn.Linear(n_in, width)
        self.second = nn.Linear(width, width)
        self.out = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.first(x.flatten(1)))
        h = h + torch.tanh(self.second(h))
        return self.out(h)

import torch
import torch.nn.functional as F


class Model(torch.nn.Module):
    """conv2d, no bias; evaluated in fp64 so no TF32 path can leak in. S and PD are task parameters."""

    def __init__(self, S: int, PD: int):
        super().__init__()
        self.S, self.PD = S, PD

    def forward(self, x, w):
        return F.conv2d(x.double(), w.double(), stride=self.S, padding=self.PD).float()

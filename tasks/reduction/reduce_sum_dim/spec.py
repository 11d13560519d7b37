import torch


class Model(torch.nn.Module):
    """Sum of a contiguous [A, R, C] fp32 tensor over its middle dimension -> [A, C]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1)

import torch


class Model(torch.nn.Module):
    """Inclusive prefix sum along the last dimension of an [R, L] fp32 tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=-1)

import torch
import torch.nn.functional as F


class Model(torch.nn.Module):
    """y = GeLU_tanh(x + b) for x [M, N] and bias b [N] (bf16); fp32 math, bf16 result."""

    def forward(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.gelu(x.float() + b.float(), approximate="tanh").to(torch.bfloat16)

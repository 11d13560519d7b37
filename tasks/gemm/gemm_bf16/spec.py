import torch


class Model(torch.nn.Module):
    """C = A @ B for row-major bf16 A [M, K] and B [K, N]; fp32 accumulation, bf16 result."""

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return (A.float() @ B.float()).to(torch.bfloat16)

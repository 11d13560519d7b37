import torch


class Model(torch.nn.Module):
    """S = Q @ K^T per batch: Q [B, M, D], K [B, N, D] bf16 -> S [B, M, N] bf16, fp32 accumulation."""

    def forward(self, Q: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        return torch.bmm(Q.float(), K.float().transpose(1, 2)).to(torch.bfloat16)

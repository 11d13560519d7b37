import torch


class Model(torch.nn.Module):
    """Y = W @ X with W = W_vals where the bitmap bit is set, else 0 (bit k % 32 of W_mask[m, k // 32]).
    fp16 in/out, fp32 accumulation."""

    def forward(self, W_vals: torch.Tensor, W_mask: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        M, K = W_vals.shape
        shifts = torch.arange(32, device=W_mask.device, dtype=torch.int32)
        keep = ((W_mask.unsqueeze(-1) >> shifts) & 1).reshape(M, K).bool()
        W = torch.where(keep, W_vals.float(), torch.zeros((), device=W_vals.device))
        return (W @ X.float()).half()

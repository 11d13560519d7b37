import torch


class Model(torch.nn.Module):
    """C = A @ W, W[k, n] = (code(k, n) - 8) * scales[k // 128, n]; codes GPTQ-packed along K."""

    def forward(self, A: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        K, N = A.shape[1], qweight.shape[1]
        shifts = torch.arange(0, 32, 4, device=A.device, dtype=torch.int32).view(1, 8, 1)
        codes = (qweight.unsqueeze(1) >> shifts) & 0xF  # [K/8, 8, N]: code of row 8*i + j
        W = (codes.reshape(K, N).float() - 8.0) * scales.float().repeat_interleave(128, dim=0)
        return (A.float() @ W).half()

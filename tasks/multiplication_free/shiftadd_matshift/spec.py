import torch


class Model(torch.nn.Module):
    """out[a, m, n] = sum_k SIGN[n, k] * (X[a, m, k] >> SHIFT[n, k]) (arithmetic shift), exact in int32."""

    def forward(self, X: torch.Tensor, SHIFT: torch.Tensor, SIGN: torch.Tensor) -> torch.Tensor:
        A, M, K = X.shape
        N = SHIFT.shape[0]
        x = X.reshape(A * M, K).long()
        out = torch.zeros(A * M, N, dtype=torch.int64, device=X.device)
        for n0 in range(0, N, 16):  # bounded memory: [A*M, 16, K] at a time
            sh = SHIFT[n0 : n0 + 16].long()
            sg = SIGN[n0 : n0 + 16].long()
            out[:, n0 : n0 + 16] = ((x[:, None, :] >> sh[None]) * sg[None]).sum(-1)
        return out.to(torch.int32).reshape(A, M, N)

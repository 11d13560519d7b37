import torch


class Model(torch.nn.Module):
    """C = A @ W, W[k, n] = q[k, n] * scales[k // G, n]; q signed int8, or signed int4 packed two per byte
    along N (even column in the low nibble)."""

    def forward(self, A: torch.Tensor, Wq: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        K, N = A.shape[1], scales.shape[1]
        G = K // scales.shape[0]
        b = Wq.to(torch.int32)
        if Wq.shape[1] == N:  # int8
            q = b - 256 * (b >= 128).to(torch.int32)
        else:  # int4: [K, N/2, 2] nibbles, low first
            nib = torch.stack([b & 0xF, b >> 4], dim=-1).reshape(K, N)
            q = nib - 16 * (nib >= 8).to(torch.int32)
        W = q.float() * scales.float().repeat_interleave(G, dim=0)
        return (A.float() @ W).half()

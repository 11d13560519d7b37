import torch


class Model(torch.nn.Module):
    """C = A @ W, W[k, n] = q[k, n] * scales[k // 128, n]; q signed BITS-bit, a little-endian bitstream in
    row-major order (element e at bits e*BITS ..). Every 8 elements fill exactly BITS bytes, so the stream is
    decoded in 8-element units, 1024 rows of W at a time (bounded memory)."""

    def forward(self, A: torch.Tensor, Wq: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        M, K = A.shape
        N = scales.shape[1]
        bits = Wq.numel() * 8 // (K * N)
        units = Wq.view(K, N // 8, bits).long()  # 8 elements per BITS bytes
        shifts = torch.arange(bits, device=A.device) * 8
        fields = torch.arange(8, device=A.device) * bits
        C = torch.zeros(M, N, device=A.device, dtype=torch.float32)
        for k0 in range(0, K, 1024):
            k1 = min(K, k0 + 1024)
            word = (units[k0:k1] << shifts).sum(-1)  # [rows, N/8], up to 56 bits
            q = (word.unsqueeze(-1) >> fields) & ((1 << bits) - 1)  # [rows, N/8, 8]
            q = q - (q >= (1 << (bits - 1))).long() * (1 << bits)  # two's complement
            W = q.reshape(k1 - k0, N).float() * scales[k0 // 128 : (k1 + 127) // 128].float().repeat_interleave(128, 0)
            C += A[:, k0:k1].float() @ W
        return C.half()

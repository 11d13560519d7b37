import torch


class Model(torch.nn.Module):
    """y = x @ W + bias, W[k, n] = scales[n] * q[k, n] - zeros[n], q 3-bit codes packed GPTQ-style:
    the three words of a 32-row group form one little-endian 96-bit string, row j at bits 3j..3j+2."""

    def forward(self, x, qweight, scales, zeros, bias):
        K, N = qweight.shape[0] // 3 * 32, qweight.shape[1]
        w = qweight.long() & 0xFFFFFFFF                                     # unsigned words
        g = w.view(K // 32, 3, N)
        bits = g[:, 0] | (g[:, 1] << 32)                                    # bits 0..63
        j = torch.arange(32, device=x.device).view(1, 32, 1)
        lo = (bits.unsqueeze(1) >> (3 * j).clamp(max=60)) & 7              # rows 0..20
        hi = (g[:, 2].unsqueeze(1) >> (3 * j - 64).clamp(min=0)) & 7        # rows 22..31
        q = torch.where(j < 21, lo, hi)
        q[:, 21] = ((bits >> 63) & 1) | ((g[:, 2] & 3) << 1)               # row 21 straddles words 1, 2
        W = scales * q.view(K, N).double() - zeros
        return (x.double() @ W + bias).float()

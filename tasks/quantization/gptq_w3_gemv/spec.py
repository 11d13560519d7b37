import torch


class Model(torch.nn.Module):
    """y = x @ W + bias, W[k, n] = scales[n] * q[k, n] - zeros[n], q 3-bit codes packed GPTQ-style:
    the three words of a 32-row group form one little-endian 96-bit string, row j at bits 3j..3j+2."""

    def forward(self, x, qweight, scales, zeros, bias):
        K, N = qweight.shape[0] // 3 * 32, qweight.shape[1]
        g = (qweight.long() & 0xFFFFFFFF).view(K // 32, 3, N)             # unsigned words
        bits = g[:, 0] | (g[:, 1] << 32)                                    # bits 0..63 of each group
        xd = x.double()
        y = bias.double().expand(x.shape[0], N).clone()
        for j in range(32):                                                 # rows k = 32 i + j
            if j < 21:
                q = (bits >> (3 * j)) & 7
            elif j == 21:                                                   # straddles words 1 and 2
                q = ((bits >> 63) & 1) | ((g[:, 2] & 3) << 1)
            else:
                q = (g[:, 2] >> (3 * j - 64)) & 7
            y += xd[:, j::32] @ (scales.double() * q.double() - zeros.double())
        return y.float()

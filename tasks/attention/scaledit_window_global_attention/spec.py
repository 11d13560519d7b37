import math

import torch


class Model(torch.nn.Module):
    """Window + global attention: token i attends the keys of its window (W consecutive tokens,
    window i // W) and all Nlo global keys under one softmax; scale 1/sqrt(D), fp32 softmax.
    Windows are processed in groups so the oracle's score memory stays bounded. W is the task
    parameter of the same name (the inputs do not carry it)."""

    def __init__(self, W: int):
        super().__init__()
        self.W = W

    def forward(self, q, k, v, kg, vg):
        B, H, N, D = q.shape
        Nlo, W = kg.shape[2], self.W
        nw = N // W
        out = torch.empty_like(q)
        step = max(1, (1 << 27) // (B * H * W * (W + Nlo)))
        kgf, vgf = kg.float(), vg.float()
        for w0 in range(0, nw, step):
            w1 = min(nw, w0 + step)
            n = w1 - w0
            sl = slice(w0 * W, w1 * W)
            qw = q[:, :, sl].float().reshape(B, H, n, W, D)
            kw = torch.cat([k[:, :, sl].float().reshape(B, H, n, W, D), kgf.unsqueeze(2).expand(B, H, n, Nlo, D)], 3)
            vw = torch.cat([v[:, :, sl].float().reshape(B, H, n, W, D), vgf.unsqueeze(2).expand(B, H, n, Nlo, D)], 3)
            p = torch.softmax(qw @ kw.transpose(-1, -2) / math.sqrt(D), dim=-1)   # [B, H, n, W, W + Nlo]
            out[:, :, sl] = (p @ vw).reshape(B, H, n * W, D).to(q.dtype)
        return out

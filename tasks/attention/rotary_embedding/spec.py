import torch


def rope_neox(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, S, H, D]; cos, sin [S, D/2]: rotate (x[i], x[i + D/2]) by the angle of position s."""
    h = x.shape[-1] // 2
    xf = x.float()
    x1, x2 = xf[..., :h], xf[..., h:]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(torch.bfloat16)


class Model(torch.nn.Module):
    """NeoX-style rotary embedding of q [B, S, HQ, D] and k [B, S, HK, D] (bf16); returns rotated copies."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        return rope_neox(q, cos, sin), rope_neox(k, cos, sin)

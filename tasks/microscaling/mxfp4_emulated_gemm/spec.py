import torch

E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def dequant(q, sf):
    """MXFP4 -> fp32: low nibble = even k; value = e2m1(code) * 2^(sf - 127) per 32-element group."""
    R = q.shape[0]
    codes = torch.stack((q & 15, q >> 4), dim=-1).reshape(R, -1).long()
    vals = torch.tensor(E2M1, dtype=torch.float32, device=q.device)[codes]
    return vals * torch.exp2(sf.float() - 127.0).repeat_interleave(32, dim=1)


class Model(torch.nn.Module):
    """C = alpha * dq(A) @ dq(B)^T in bf16 (products exact in fp32)."""

    def forward(self, A_fp4, A_sf, B_fp4, B_sf, alpha):
        C = dequant(A_fp4, A_sf) @ dequant(B_fp4, B_sf).t()
        return (C * alpha.float()).to(torch.bfloat16)

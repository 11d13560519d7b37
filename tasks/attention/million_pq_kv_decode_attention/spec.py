import math
import torch


class Model(torch.nn.Module):
    """Decode GQA attention over a product-quantized KV cache (MILLION) plus a dense recent window."""

    def forward(self, q, Ck, Cv, kcode, vcode, k_res, v_res):
        B, Hq, D = q.shape
        Hkv = kcode.shape[1]
        S = kcode.shape[2]
        M = Ck.shape[0]
        m = torch.arange(M, device=q.device)
        # Ck[m, code[..., m]] for every subspace, concatenated along the head dim.
        k_hat = Ck.float()[m, kcode.long()].reshape(B, Hkv, S, D)
        v_hat = Cv.float()[m, vcode.long()].reshape(B, Hkv, S, D)
        K = torch.cat([k_hat, k_res.float()], dim=2)             # [B, Hkv, S + R, D]
        V = torch.cat([v_hat, v_res.float()], dim=2)
        qg = q.float().reshape(B, Hkv, Hq // Hkv, D)              # GQA: head h uses KV head h // G
        s = torch.einsum("bhgd,bhsd->bhgs", qg, K) / math.sqrt(D)
        p = torch.softmax(s, dim=-1)
        return torch.einsum("bhgs,bhsd->bhgd", p, V).reshape(B, Hq, D).half()

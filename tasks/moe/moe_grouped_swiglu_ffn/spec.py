import torch
import torch.nn.functional as F


class Model(torch.nn.Module):
    """MoE expert FFN on routed pairs. Token t owns pairs tok_off[t] .. tok_off[t+1]-1; slot s of the
    expert-sorted order holds pair perm[s] and belongs to expert e iff expert_off[e] <= s < expert_off[e+1].
    W1 rows are interleaved (even = gate, odd = up).
    o[t] = sum over t's pairs p of scores[p] * (SiLU(x W1g^T) * (x W1u^T)) W2^T for p's expert."""

    def forward(self, x, tok_off, expert_off, perm, scores, W1, W2):
        T, H = x.shape
        E, P = W1.shape[0], perm.shape[0]
        dev = x.device
        tok = torch.repeat_interleave(torch.arange(T, device=dev), (tok_off[1:] - tok_off[:-1]).long(),
                                      output_size=P)                       # token of pair p
        xf = x.float()
        out = torch.zeros(T, H, dtype=torch.float32, device=dev)
        for e in range(E):
            pairs = perm[expert_off[e]:expert_off[e + 1]].long()
            if pairs.numel() == 0:
                continue
            g = xf[tok[pairs]] @ W1[e].float().t()                         # [n_e, 2I]
            h = F.silu(g[:, 0::2]) * g[:, 1::2]                             # [n_e, I]
            y = (h @ W2[e].float().t()) * scores[pairs].float().unsqueeze(1)
            out.index_add_(0, tok[pairs], y)
        return out.to(torch.bfloat16)

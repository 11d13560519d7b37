import math

import torch


class Model(torch.nn.Module):
    """Tree attention: node t of the draft tree (parent of t > 0 is parent_code[t] % t) attends the
    whole prefix and the tree keys of its ancestors and itself; GQA, scale 1/sqrt(D), fp32 softmax."""

    def forward(self, q, k_cache, v_cache, k_tree, v_tree, parent_code):
        B, T, Hq, D = q.shape
        Hkv, L = k_cache.shape[1], k_cache.shape[2]
        anc = torch.zeros(T, T, dtype=torch.bool)
        for t in range(T):
            if t > 0:
                anc[t] = anc[int(parent_code[t]) % t]
            anc[t, t] = True
        mask = torch.cat([torch.ones(T, L, dtype=torch.bool), anc], 1).to(q.device)  # [T, L + T]
        k = torch.cat([k_cache, k_tree], 2).float().repeat_interleave(Hq // Hkv, 1)  # [B, Hq, L+T, D]
        v = torch.cat([v_cache, v_tree], 2).float().repeat_interleave(Hq // Hkv, 1)
        s = q.float().transpose(1, 2) @ k.transpose(-1, -2) / math.sqrt(D)         # [B, Hq, T, L+T]
        p = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1)
        return (p @ v).transpose(1, 2).contiguous().to(torch.bfloat16)              # [B, T, Hq, D]

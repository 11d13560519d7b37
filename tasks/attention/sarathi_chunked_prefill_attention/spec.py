import torch


class Model(torch.nn.Module):
    """SARATHI mixed batch on a paged KV cache (16-token pages, FlashInfer indptr/indices/last_len):
    a prefill chunk (q rows 0..C-1, positions PRE..PRE+C-1) plus NDEC one-token decodes, causal
    bottom-right, GQA. PRE is the task parameter of the same name (the inputs do not carry it)."""

    def __init__(self, PRE: int):
        super().__init__()
        self.PRE = PRE

    def forward(self, q, k_cache, v_cache, kv_indices, dec_indptr, dec_last_len):
        Ntok, Hq, D = q.shape
        Hkv, NDEC = k_cache.shape[2], dec_last_len.shape[0]
        C, PRE, G = Ntok - NDEC, self.PRE, Hq // Hkv
        kc, vc = k_cache.view(-1, Hkv, D), v_cache.view(-1, Hkv, D)     # [pages * 16, Hkv, D]

        def attend(qs, pages, L, q_pos):                                 # qs [n, Hq, D], q_pos [n]
            j = torch.arange(L, device=q.device)
            slots = pages.long()[j // 16] * 16 + j % 16
            k, v = kc[slots].float(), vc[slots].float()                  # [L, Hkv, D]
            s = torch.einsum("nhgd,lhd->nhgl", qs.float().view(-1, Hkv, G, D), k) * D ** -0.5
            s = s.masked_fill(j.view(1, 1, 1, -1) > q_pos.view(-1, 1, 1, 1), float("-inf"))
            return torch.einsum("nhgl,lhd->nhgd", s.softmax(-1), v).reshape(-1, Hq, D)

        out = torch.empty_like(q)
        np0 = (PRE + C + 15) // 16
        out[:C] = attend(q[:C], kv_indices[:np0], PRE + C, PRE + torch.arange(C, device=q.device)).to(q.dtype)
        for i in range(NDEC):
            p0, p1 = int(dec_indptr[i]), int(dec_indptr[i + 1])
            L = (p1 - p0 - 1) * 16 + int(dec_last_len[i])
            pos = torch.tensor([L - 1], device=q.device)
            out[C + i] = attend(q[C + i:C + i + 1], kv_indices[np0 + p0:np0 + p1], L, pos)[0].to(q.dtype)
        return out

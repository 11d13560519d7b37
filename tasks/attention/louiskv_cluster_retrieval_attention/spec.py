import torch


class Model(torch.nn.Module):
    """Cluster retrieval attention: score_c = max over the GQA group of q_h . centroid_c (exact: integer-
    valued q and centroids), keep the NK best clusters (ties: lower index), attend (scale 1/sqrt(D))
    over the tokens of the kept clusters only. Returns (o, sel)."""

    def __init__(self, NK: int):
        super().__init__()
        self.NK = NK

    def forward(self, q, centroids, cl_off, k_store, v_store):
        B, Hq, D = q.shape
        Hkv, C = centroids.shape[1], centroids.shape[2]
        G, NK = Hq // Hkv, self.NK
        qg = q.float().view(B, Hkv, G, D)
        scores = torch.einsum("bkgd,bkcd->bkgc", qg, centroids.float()).amax(dim=2)   # [B, Hkv, C]
        sel = torch.sort(scores, dim=2, descending=True, stable=True).indices[:, :, :NK]
        off = cl_off.long().view(-1)
        o = torch.empty(B, Hkv, G, D, dtype=torch.float32, device=q.device)
        for b in range(B):
            for h in range(Hkv):
                c = (b * Hkv + h) * C + sel[b, h]
                start, length = off[c], off[c + 1] - off[c]
                first = torch.cumsum(length, 0) - length
                n = int(length.sum())
                tok = start.repeat_interleave(length) + torch.arange(n, device=q.device) - first.repeat_interleave(length)
                s = qg[b, h] @ k_store[tok].float().t() / D ** 0.5                      # [G, n]
                o[b, h] = torch.softmax(s, dim=-1) @ v_store[tok].float()
        return o.view(B, Hq, D).to(torch.bfloat16), sel.int()

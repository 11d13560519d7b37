import torch


class Model(torch.nn.Module):
    """Smith-Waterman (Gotoh affine gaps, gap of length k costs GO + k*GE), best local score per pair.
    Anti-diagonal sweep, vectorized over pairs and the cells of a diagonal. GO, GE: task parameters."""

    def __init__(self, GO: int, GE: int):
        super().__init__()
        self.GO, self.GE = GO, GE

    def forward(self, q, t, S):
        P, Lq = q.shape
        Lt = t.shape[1]
        NEG = -(1 << 40)
        q, t, S = q.long(), t.long(), S.long()
        goe, ge = self.GO + self.GE, self.GE
        i = torch.arange(Lq, device=q.device)
        zero = torch.zeros(P, 1, dtype=torch.long, device=q.device)
        h1 = torch.zeros(P, Lq, dtype=torch.long, device=q.device)  # H on diagonal d-1, by row
        h2 = h1.clone()                                               # H on diagonal d-2
        e1 = torch.full_like(h1, NEG)
        f1 = torch.full_like(h1, NEG)
        best = torch.zeros(P, dtype=torch.long, device=q.device)
        for d in range(Lq + Lt - 1):  # cell (i, j = d - i)
            j = d - i
            valid = (j >= 0) & (j < Lt)
            sc = S[q, t[:, j.clamp(0, Lt - 1)]]
            up_h = torch.cat((zero, h1[:, :-1]), 1)              # H[i-1, j]
            up_f = torch.cat((zero + NEG, f1[:, :-1]), 1)        # F[i-1, j]
            dg = torch.cat((zero, h2[:, :-1]), 1)                # H[i-1, j-1]
            e = torch.maximum(e1 - ge, h1 - goe)                 # from (i, j-1)
            f = torch.maximum(up_f - ge, up_h - goe)
            h = torch.maximum(torch.clamp(dg + sc, min=0), torch.maximum(e, f))
            h = torch.where(valid, h, 0)
            e = torch.where(valid, e, NEG)
            f = torch.where(valid, f, NEG)
            best = torch.maximum(best, h.max(dim=1).values)
            h2, h1, e1, f1 = h1, h, e, f
        return best.int()

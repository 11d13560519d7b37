import torch


class Model(torch.nn.Module):
    """Speculative sampling with exact integer arithmetic: accept draft i iff U*Q[x] < P[x]*2^24, stop
    at the first rejection n, then inverse-CDF sample from max(0, P[n]-Q[n]) (P[G] if all accepted;
    P[n] if the residual is all zero) with threshold floor(U2*R/2^24)."""

    def forward(self, Q, P, tokens, U, U2):
        B, G, V = Q.shape
        x = tokens.long().unsqueeze(-1)
        p_x = P[:, :G].gather(2, x).squeeze(-1).long()
        q_x = Q.gather(2, x).squeeze(-1).long()
        rejected = U.long() * q_x >= p_x * (1 << 24)
        n = torch.where(rejected.any(1), rejected.int().argmax(1), torch.full_like(U2, G).long())
        rows = torch.arange(B, device=P.device)
        p_row = P[rows, n].long()                                   # [B, V]
        q_row = Q[rows, n.clamp(max=G - 1)].long()
        draft = (n < G).unsqueeze(1)
        r = torch.where(draft, (p_row - q_row).clamp(min=0), p_row)
        r = torch.where(draft & (r.sum(1, keepdim=True) == 0), p_row, r)
        R = r.sum(1)
        t = (U2.long() * R) >> 24
        token = (r.cumsum(1) <= t.unsqueeze(1)).sum(1).clamp(max=V - 1)  # first v with C[v] > t
        j = torch.arange(G + 1, device=P.device).unsqueeze(0)
        padded = torch.cat([tokens.long(), torch.zeros_like(n).unsqueeze(1)], 1)
        emitted = torch.where(j < n.unsqueeze(1), padded,
                              torch.where(j == n.unsqueeze(1), token.unsqueeze(1), -1))
        return n.int(), emitted.int()

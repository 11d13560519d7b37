import torch


class Model(torch.nn.Module):
    """Greedy tree verification: node i > 0 (parent parent_code[i] % i) is accepted iff it and its
    ancestors match the argmax of their parents' logits; returns the deepest accepted path
    (smallest leaf index on ties), its length, leaf, bonus token and tokens (-1 padded)."""

    def forward(self, logits, parent_code, tokens):
        B, T, _ = logits.shape
        am = logits.argmax(dim=-1)                                  # first maximum
        par = [0] * T
        depth = torch.zeros(T, dtype=torch.long, device=logits.device)
        ok = torch.zeros(B, T, dtype=torch.bool, device=logits.device)
        ok[:, 0] = True
        for i in range(1, T):
            p = int(parent_code[i]) % i
            par[i] = p
            depth[i] = depth[p] + 1
            ok[:, i] = ok[:, p] & (tokens[:, i].long() == am[:, p])
        score = torch.where(ok, depth.unsqueeze(0), torch.full_like(ok, -1, dtype=torch.long))
        last = score.argmax(dim=1)                                  # deepest, smallest index first
        accept_len = depth[last]
        next_token = am.gather(1, last.unsqueeze(1)).squeeze(1)
        accepted = torch.full((B, T - 1), -1, dtype=torch.int32, device=logits.device)
        for b in range(B):
            n = int(last[b])
            while n != 0:
                accepted[b, int(depth[n]) - 1] = tokens[b, n]
                n = par[n]
        return accept_len.int(), last.int(), next_token.int(), accepted

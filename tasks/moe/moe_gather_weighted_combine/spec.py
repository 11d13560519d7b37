import torch


class Model(torch.nn.Module):
    """out[t] = sum over pairs j of token t (off[t] <= j < off[t+1]) of w[j] * Y[perm[j]], fp32."""

    def forward(self, Y, perm, off, w):
        T, P = off.shape[0] - 1, perm.shape[0]
        tok = torch.repeat_interleave(torch.arange(T, device=Y.device), (off[1:] - off[:-1]).long(),
                                      output_size=P)                      # token of pair j
        rows = Y[perm.long()].float() * w.float().unsqueeze(1)
        out = torch.zeros(T, Y.shape[1], dtype=torch.float32, device=Y.device)
        return out.index_add_(0, tok, rows)

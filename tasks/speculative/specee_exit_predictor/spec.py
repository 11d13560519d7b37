import torch


class Model(torch.nn.Module):
    """SpecEE exit predictor: z = h . lm_head[ids] (the k speculative tokens' logits),
    f = [softmax(z), z - z_prev], score = sigmoid(w2 . ReLU(W1 f + b1) + b2). Returns (score, z)."""

    def forward(self, h, lm_head, ids, z_prev, W1, b1, w2, b2):
        z = torch.einsum("bh,bkh->bk", h.float(), lm_head[ids.long()].float())   # [B, k]
        f = torch.cat([torch.softmax(z, dim=-1), z - z_prev], dim=-1)            # [B, 2k]
        hidden = torch.relu(f @ W1.t() + b1)                                      # [B, 512]
        return torch.sigmoid(hidden @ w2 + b2), z

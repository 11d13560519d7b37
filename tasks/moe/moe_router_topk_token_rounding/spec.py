import torch


class Model(torch.nn.Module):
    """Top-K router: logits = x Wr^T / 64 (exact), top-K per token (ties: lower expert first), softmax
    over the chosen, and the expert-sorted metadata (counts, offsets, stable permutation of pair ids).
    K is the task parameter of the same name (the inputs do not carry it)."""

    def __init__(self, K: int):
        super().__init__()
        self.K = K

    def forward(self, x, Wr):
        T, E, K = x.shape[0], Wr.shape[0], self.K
        logits = ((x.double() @ Wr.double().t()) / 64).float()            # integer inputs: exact
        top_v, top_i = torch.sort(logits, dim=1, descending=True, stable=True)
        top_v, top_i = top_v[:, :K], top_i[:, :K]
        scores = torch.softmax(top_v, dim=1).reshape(-1)
        expert_idx = top_i.reshape(-1).int()
        token_idx = torch.arange(T, device=x.device).repeat_interleave(K).int()
        counts = torch.bincount(expert_idx.long(), minlength=E).int()
        off = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0).int()])
        perm = torch.sort(expert_idx, stable=True).indices.int()
        return scores, expert_idx, token_idx, counts, off, perm

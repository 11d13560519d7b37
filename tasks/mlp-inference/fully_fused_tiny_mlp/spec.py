import torch


class Model(torch.nn.Module):
    """Bias-free ReLU MLP 64 -> WD -> ... -> WD -> 16; fp32 accumulation, fp16 activations between layers."""

    def forward(self, x, w_in, w_hid, w_out):
        h = torch.relu(x.float() @ w_in.float().t()).half()
        for l in range(w_hid.shape[0]):
            h = torch.relu(h.float() @ w_hid[l].float().t()).half()
        return (h.float() @ w_out.float().t()).half()

import torch


class Model(torch.nn.Module):
    """y = x @ W^T with W dequantized from NF4 codes and double-quantized 64-block scales."""

    def forward(self, x, qW, absmax_q, code8, absmax2, offset, nf4):
        B, K = x.shape
        N = qW.numel() * 2 // K
        nblk = absmax_q.numel()
        absmax = code8[absmax_q.long()] * absmax2.repeat_interleave(256)[:nblk] + offset
        codes = torch.stack((qW >> 4, qW & 15), dim=-1).reshape(-1).long()  # high nibble first
        W = (nf4[codes].view(nblk, 64) * absmax[:, None]).view(N, K)
        return (x.float() @ W.t()).to(torch.bfloat16)

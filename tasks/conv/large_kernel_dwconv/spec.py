import torch
import torch.nn.functional as F


class Model(torch.nn.Module):
    """Depthwise KxK conv, stride 1, 'same' zero padding, bias; fp32 accumulation, fp16 output."""

    def forward(self, x, w, bias):
        C, K = w.shape[0], w.shape[-1]
        y = F.conv2d(x.float(), w.float(), bias.float(), stride=1, padding=K // 2, groups=C)
        return y.half()

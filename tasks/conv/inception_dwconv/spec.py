import torch
import torch.nn.functional as F


class Model(torch.nn.Module):
    """InceptionDWConv2d: split channels (id | 3x3 | 1xKB | KBx1), depthwise convs, concat, fp16 out.
    Evaluated in fp64 (exact products, no TF32 path) and rounded once to fp16."""

    def forward(self, x, w_hw, b_hw, w_w, b_w, w_h, b_h):
        C, gc, kb = x.shape[1], w_hw.shape[0], w_w.shape[-1]
        x_id, x_hw, x_w, x_h = torch.split(x.double(), (C - 3 * gc, gc, gc, gc), dim=1)
        y = torch.cat(
            (
                x_id,
                F.conv2d(x_hw, w_hw.double(), b_hw.double(), padding=(1, 1), groups=gc),
                F.conv2d(x_w, w_w.double(), b_w.double(), padding=(0, kb // 2), groups=gc),
                F.conv2d(x_h, w_h.double(), b_h.double(), padding=(kb // 2, 0), groups=gc),
            ),
            dim=1,
        )
        return y.half()

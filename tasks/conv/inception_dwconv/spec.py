import torch
import torch.nn.functional as F


class Model(torch.nn.Module):
    """InceptionDWConv2d: split channels (id | 3x3 | 1xKB | KBx1), depthwise convs in fp32, concat, fp16 out."""

    def forward(self, x, w_hw, b_hw, w_w, b_w, w_h, b_h):
        C, gc, kb = x.shape[1], w_hw.shape[0], w_w.shape[-1]
        x_id, x_hw, x_w, x_h = torch.split(x.float(), (C - 3 * gc, gc, gc, gc), dim=1)
        y = torch.cat(
            (
                x_id,
                F.conv2d(x_hw, w_hw.float(), b_hw.float(), padding=(1, 1), groups=gc),
                F.conv2d(x_w, w_w.float(), b_w.float(), padding=(0, kb // 2), groups=gc),
                F.conv2d(x_h, w_h.float(), b_h.float(), padding=(kb // 2, 0), groups=gc),
            ),
            dim=1,
        )
        return y.half()

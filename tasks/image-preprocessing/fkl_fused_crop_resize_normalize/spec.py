import torch


class Model(torch.nn.Module):
    """Per crop: bilinear resize (half-pixel centers, border replicate, fp32) -> BGR->RGB ->
    (v/255 - mean)/std -> planar [3, HO, WO]. HO and WO are the task parameters of those names."""

    def __init__(self, HO: int, WO: int):
        super().__init__()
        self.HO, self.WO = HO, WO

    def forward(self, src, crop_x, crop_y, crop_w, crop_h, mean, std):
        outs = []
        for b in range(crop_x.shape[0]):
            x, y, w, h = (int(t[b]) for t in (crop_x, crop_y, crop_w, crop_h))
            crop = src[y:y + h, x:x + w].float()  # [h, w, 3] BGR

            def taps(n_out, n_in):  # f = (o + 0.5) * n_in / n_out - 0.5, exactly: f = n / (2 n_out)
                n = (2 * torch.arange(n_out, device=src.device) + 1) * n_in - n_out
                i0 = torch.div(n, 2 * n_out, rounding_mode="floor")
                a = (n - i0 * 2 * n_out).float() / (2 * n_out)
                return i0.clamp(0, n_in - 1), (i0 + 1).clamp(0, n_in - 1), a

            y0, y1, ay = taps(self.HO, h)
            x0, x1, ax = taps(self.WO, w)
            ax = ax[None, :, None]
            top = (1 - ax) * crop[y0][:, x0] + ax * crop[y0][:, x1]
            bot = (1 - ax) * crop[y1][:, x0] + ax * crop[y1][:, x1]
            v = (1 - ay[:, None, None]) * top + ay[:, None, None] * bot  # [HO, WO, 3] BGR
            rgb = v.flip(-1)
            outs.append(((rgb / 255 - mean) / std).permute(2, 0, 1))
        return torch.stack(outs)

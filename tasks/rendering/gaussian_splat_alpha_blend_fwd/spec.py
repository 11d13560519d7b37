import torch


class Model(torch.nn.Module):
    """3DGS per-tile front-to-back alpha blending (renderCUDA semantics), vectorized over tiles
    and pixels, sequential over chunks of each tile's list (cumprod of 1 - alpha with the stop rule)."""

    def forward(self, tile_offsets, xy, conic_a, conic_b, conic_c, opacity, feat, bg):
        Cf, H, W = bg.shape
        TX, TY = (W + 15) // 16, (H + 15) // 16
        dev = xy.device
        off = tile_offsets.long()
        start, count = off[:-1], off[1:] - off[:-1]                  # [T]
        ly, lx = torch.meshgrid(torch.arange(16, device=dev), torch.arange(16, device=dev), indexing="ij")
        lx = lx.reshape(1, 256, 1).float()
        ly = ly.reshape(1, 256, 1).float()
        T = torch.ones(TX * TY, 256, device=dev)
        C = torch.zeros(TX * TY, 256, Cf, device=dev)
        alive = torch.ones(TX * TY, 256, dtype=torch.bool, device=dev)
        CH = 32
        for j0 in range(0, int(count.max()), CH):
            j = j0 + torch.arange(CH, device=dev)
            valid = (j[None, :] < count[:, None])[:, None, :]        # [T, 1, CH]
            e = (start[:, None] + j[None, :]).clamp(max=xy.shape[0] - 1)
            dx = xy[e, 0][:, None, :] - lx                           # [T, 256, CH]
            dy = xy[e, 1][:, None, :] - ly
            power = -0.5 * (conic_a[e][:, None, :] * dx * dx + conic_c[e][:, None, :] * dy * dy) \
                - conic_b[e][:, None, :] * dx * dy
            alpha = torch.clamp(opacity[e][:, None, :] * torch.exp(power), max=0.99)
            use = valid & (power <= 0) & (alpha >= 1.0 / 255.0) & alive[..., None]
            alpha = torch.where(use, alpha, torch.zeros_like(alpha))
            keep = torch.cumprod(1.0 - alpha, dim=-1)
            stop = use & (T[..., None] * keep < 1e-4)                # test_T < 1e-4
            first_stop = stop & (torch.cumsum(stop.int(), dim=-1) == 1)
            before_stop = torch.cumsum(first_stop.int(), dim=-1) == 0
            contrib = use & before_stop
            a = torch.where(contrib, alpha, torch.zeros_like(alpha))
            excl = torch.cumprod(torch.cat([torch.ones_like(a[..., :1]), 1.0 - a[..., :-1]], -1), -1)
            wgt = a * T[..., None] * excl                            # alpha * T before the entry
            C = C + torch.einsum("tpj,tjc->tpc", wgt, feat[e])
            T = T * torch.prod(1.0 - a, dim=-1)
            alive = alive & ~first_stop.any(-1)
        img = (C.reshape(TY, TX, 16, 16, Cf).permute(4, 0, 2, 1, 3).reshape(Cf, TY * 16, TX * 16))
        Tm = T.reshape(TY, TX, 16, 16).permute(0, 2, 1, 3).reshape(TY * 16, TX * 16)
        image = img[:, :H, :W] + Tm[:H, :W] * bg
        return image, Tm[:H, :W].contiguous()

import torch


class Model(torch.nn.Module):
    """LangSplatV2: 3DGS front-to-back blending of sparse codebook coefficients into A [H, W, L]
    (vectorized over tiles and pixels, sequential over chunks of each tile's list, as in
    gaussian_splat_alpha_blend_fwd), then feat = A @ CB. H and W are the task parameters (no input
    shape carries them)."""

    def __init__(self, H: int, W: int):
        super().__init__()
        self.H, self.W = H, W

    def forward(self, tile_offsets, xy, conic_a, conic_b, conic_c, opacity, code_idx, code_w, CB):
        L, Df = CB.shape
        TN = tile_offsets.shape[0] - 1
        dev = xy.device
        H, W = self.H, self.W
        TX, TY = (W + 15) // 16, (H + 15) // 16
        assert TX * TY == TN
        off = tile_offsets.long()
        start, count = off[:-1], off[1:] - off[:-1]
        ly, lx = torch.meshgrid(torch.arange(16, device=dev), torch.arange(16, device=dev), indexing="ij")
        lx = lx.reshape(1, 256, 1).float()
        ly = ly.reshape(1, 256, 1).float()
        dense = torch.zeros(xy.shape[0], L, device=dev).scatter_add_(1, code_idx.long(), code_w)  # [E, L]
        T = torch.ones(TN, 256, device=dev)
        A = torch.zeros(TN, 256, L, device=dev)
        alive = torch.ones(TN, 256, dtype=torch.bool, device=dev)
        CH = 32
        for j0 in range(0, int(count.max()) if TN else 0, CH):
            j = j0 + torch.arange(CH, device=dev)
            valid = (j[None, :] < count[:, None])[:, None, :]
            e = (start[:, None] + j[None, :]).clamp(max=xy.shape[0] - 1)
            dx = xy[e, 0][:, None, :] - lx
            dy = xy[e, 1][:, None, :] - ly
            power = -0.5 * (conic_a[e][:, None, :] * dx * dx + conic_c[e][:, None, :] * dy * dy) \
                - conic_b[e][:, None, :] * dx * dy
            alpha = torch.clamp(opacity[e][:, None, :] * torch.exp(power), max=0.99)
            use = valid & (power <= 0) & (alpha >= 1.0 / 255.0) & alive[..., None]
            alpha = torch.where(use, alpha, torch.zeros_like(alpha))
            keep = torch.cumprod(1.0 - alpha, dim=-1)
            stop = use & (T[..., None] * keep < 1e-4)
            first_stop = stop & (torch.cumsum(stop.int(), dim=-1) == 1)
            before_stop = torch.cumsum(first_stop.int(), dim=-1) == 0
            a = torch.where(use & before_stop, alpha, torch.zeros_like(alpha))
            excl = torch.cumprod(torch.cat([torch.ones_like(a[..., :1]), 1.0 - a[..., :-1]], -1), -1)
            A = A + torch.einsum("tpj,tjl->tpl", a * T[..., None] * excl, dense[e])
            T = T * torch.prod(1.0 - a, dim=-1)
            alive = alive & ~first_stop.any(-1)
        A = A.reshape(TY, TX, 16, 16, L).permute(0, 2, 1, 3, 4).reshape(TY * 16, TX * 16, L)[:H, :W]
        return A @ CB

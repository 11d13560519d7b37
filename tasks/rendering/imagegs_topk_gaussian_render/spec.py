import torch


class Model(torch.nn.Module):
    """Image-GS top-K normalized rendering over per-tile Gaussian lists. Running top-K per pixel,
    merged chunk by chunk with a stable descending sort (equal weights: the earlier entry wins).
    H, W and K are the task parameters (no input shape carries H and W)."""

    def __init__(self, H: int, W: int, K: int):
        super().__init__()
        self.H, self.W, self.K = H, W, K

    def forward(self, tile_offsets, xy, conic_a, conic_b, conic_c, feat):
        H, W, K = self.H, self.W, self.K
        TX, TY = (W + 15) // 16, (H + 15) // 16
        TN, C, dev = TX * TY, feat.shape[1], xy.device
        off = tile_offsets.long()
        start, count = off[:-1], off[1:] - off[:-1]
        ly, lx = torch.meshgrid(torch.arange(16, device=dev), torch.arange(16, device=dev), indexing="ij")
        lx = lx.reshape(1, 256, 1).float()
        ly = ly.reshape(1, 256, 1).float()
        top_g = torch.full((TN, 256, K), -1.0, device=dev)  # -1: empty slot (every real g >= 0)
        top_e = torch.zeros(TN, 256, K, dtype=torch.long, device=dev)
        CH = 16
        for j0 in range(0, int(count.max()), CH):
            j = j0 + torch.arange(CH, device=dev)
            valid = (j[None, :] < count[:, None])[:, None, :]
            e = (start[:, None] + j[None, :]).clamp(max=xy.shape[0] - 1)
            dx = xy[e, 0][:, None, :] - lx
            dy = xy[e, 1][:, None, :] - ly
            power = -0.5 * (conic_a[e][:, None, :] * dx * dx + conic_c[e][:, None, :] * dy * dy) \
                - conic_b[e][:, None, :] * dx * dy
            g = torch.where(valid, torch.exp(power), torch.full_like(power, -1.0))
            cand_g = torch.cat((top_g, g), dim=-1)  # earlier entries first: a stable sort keeps them first
            cand_e = torch.cat((top_e, e[:, None, :].expand(-1, 256, -1)), dim=-1)
            order = torch.sort(cand_g, dim=-1, descending=True, stable=True).indices[..., :K]
            top_g, top_e = cand_g.gather(-1, order), cand_e.gather(-1, order)
        w = top_g.clamp(min=0.0)  # empty slots weigh nothing
        img = torch.einsum("tpk,tpkc->tpc", w, feat[top_e]) / (w.sum(-1, keepdim=True) + 1e-7)
        img = img.reshape(TY, TX, 16, 16, C).permute(4, 0, 2, 1, 3).reshape(C, TY * 16, TX * 16)
        return img[:, :H, :W].contiguous()

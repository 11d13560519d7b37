import torch


class Model(torch.nn.Module):
    """y = x @ w.T with the ternary w[H, W] decoded from 16-bit codewords through the dictionary `dec`.

    Codeword c yields n = min(2 * (dec[c,0] & 15), 28) digits; digit d is (dec[c, d // 14] >> (4 + 2*(d % 14))) & 3.
    Row r concatenates the digits of codewords row_off[r] .. row_off[r+1]-1 (row_off[0] = 0; codewords past
    row_off[H] belong to no row); digits at positions >= W are
    dropped, missing ones are zero. Digit 1 -> minmax[r,0], 2 -> minmax[r,1], 0 and 3 -> 0.
    """

    def forward(self, dec, w_comp, row_off, minmax, x):
        H, W = minmax.shape[0], x.shape[1]
        dev = x.device
        # Codewords past row_off[H] belong to no row (w_comp is capacity; rows start at row_off[0] = 0).
        owned = w_comp[: int(row_off[-1])]
        halves = dec[owned.to(torch.int64)].to(torch.int64) & 0xFFFFFFFF  # [C, 2], as unsigned
        n = torch.clamp(2 * (halves[:, 0] & 15), max=28)  # digits per codeword
        d = torch.arange(28, device=dev)
        digits = (halves[:, d // 14] >> (4 + 2 * (d % 14))) & 3  # [C, 28]
        counts = (row_off[1:] - row_off[:-1]).to(torch.int64)
        row = torch.repeat_interleave(torch.arange(H, device=dev), counts)  # row of each codeword
        cs = torch.cat([n.new_zeros(1), torch.cumsum(n, 0)])  # cs[c] = digits before codeword c
        start = cs[:-1] - cs[row_off[:-1].to(torch.int64)][row]  # first digit of c within its row
        col = start[:, None] + d  # [C, 28]
        keep = (d < n[:, None]) & (col < W) & ((digits == 1) | (digits == 2))
        mm = minmax.float()
        val = torch.where(digits == 1, mm[row, 0][:, None], mm[row, 1][:, None])
        r_idx = row[:, None].expand_as(col)
        w = torch.zeros(H, W, device=dev, dtype=torch.float32)
        w[r_idx[keep], col[keep]] = val[keep]
        return (x.float() @ w.t()).to(torch.bfloat16)

import math
import torch


def decompress(bitmap, values):
    """[B, H, T] u64 bitmaps + [B, H, cap] packed fp16 stream -> [B, H, T, 64] dense fp32 tiles."""
    bm = bitmap.view(torch.int64)
    bits = ((bm.unsqueeze(-1) >> torch.arange(64, device=bm.device)) & 1).bool()
    count = bits.sum(-1)
    padded = (count + 7) // 8 * 8
    off = torch.cumsum(padded, -1) - padded                 # exclusive prefix, 16-byte aligned
    rank = torch.cumsum(bits.long(), -1) - 1                # position among the tile's kept values
    idx = (off.unsqueeze(-1) + rank).clamp(min=0)
    B, H, T, _ = bits.shape
    dense = torch.gather(values.float(), 2, idx.reshape(B, H, T * 64)).reshape(B, H, T, 64)
    return dense * bits


class Model(torch.nn.Module):
    """Decode GQA attention over a Mustafar bitmap-compressed KV cache plus a dense recent window."""

    def forward(self, q, k_bitmap, k_values, v_bitmap, v_values, k_res, v_res):
        B, Hq, D = q.shape
        Hkv = k_res.shape[1]
        NC = k_bitmap.shape[2] // D
        # K tiles run along tokens for one channel: tile c*D + d = K[64c:64c+64, d].
        ks = decompress(k_bitmap, k_values).reshape(B, Hkv, NC, D, 64)
        ks = ks.permute(0, 1, 2, 4, 3).reshape(B, Hkv, NC * 64, D)
        # V tiles run along channels of one token: tile s*(D/64) + j = V[s, 64j:64j+64].
        vs = decompress(v_bitmap, v_values).reshape(B, Hkv, NC * 64, D)
        K = torch.cat([ks, k_res.float()], dim=2)                # [B, Hkv, S, D]
        V = torch.cat([vs, v_res.float()], dim=2)
        qg = q.float().reshape(B, Hkv, Hq // Hkv, D)              # GQA: head h uses KV head h // G
        s = torch.einsum("bhgd,bhsd->bhgs", qg, K) / math.sqrt(D)
        p = torch.softmax(s, dim=-1)
        return torch.einsum("bhgs,bhsd->bhgd", p, V).reshape(B, Hq, D).half()

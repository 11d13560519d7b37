import torch

CPB = 512  # 8-byte chunks per format block (one offset per block is stored)


class Model(torch.nn.Module):
    """DFloat11 decode. Chunk c = stream bits [64c, 64c+64); its first code starts at bit
    64c + (gaps[c] & 31), and it decodes every code that starts inside the chunk (MSB-first; a code may
    run into the next chunk). Entry e = lut[next 16 bits]: symbol e & 0xFF, length ((e >> 8) - 1) % 16 + 1.
    Block b (chunks [512b, 512b+512)) concatenates its chunks' symbols and owns outputs
    [block_off[b], block_off[b+1]): output j of the block is its j-th symbol, or exponent 0 if it has
    fewer (extra symbols are dropped). out = sign << 15 | exponent << 7 | mantissa (bf16 bits, u16)."""

    def forward(self, lut, bits, gaps, block_off, sign_mant):
        dev, nch, n = bits.device, gaps.shape[0], sign_mant.shape[0]
        b = bits.long()
        e = lut.long()
        sym_tab, len_tab = (e & 0xFF).to(torch.uint8), (((e >> 8) - 1) & 15) + 1
        start = torch.arange(nch, device=dev) * 64
        pos, end = start + (gaps.long() & 31), start + 64
        syms, valid = [], []
        for _ in range(64):  # every code is >= 1 bit, so a chunk yields at most 64 symbols
            act = pos < end
            byte = pos >> 3
            window = (b[byte] << 16) | (b[byte + 1] << 8) | b[byte + 2]
            peek = (window >> (8 - (pos & 7))) & 0xFFFF
            syms.append(sym_tab[peek])
            valid.append(act)
            pos = torch.where(act, pos + len_tab[peek], pos)
        S, V = torch.stack(syms, 1), torch.stack(valid, 1)        # [nch, 64]; V is a prefix per row
        flat = torch.cat([S[V], S.new_zeros(1)])                  # chunk-major symbol stream
        nblk = block_off.shape[0] - 1
        counts = torch.nn.functional.pad(V.sum(1), (0, nblk * CPB - nch)).view(nblk, CPB).sum(1)
        first = torch.cumsum(counts, 0) - counts                  # block's first symbol in flat
        off = block_off.long()
        i = torch.arange(n, device=dev)
        blk = torch.searchsorted(off, i, right=True) - 1
        j = i - off[blk]
        ok = j < counts[blk]
        exp = torch.where(ok, flat[torch.where(ok, first[blk] + j, flat.numel() - 1)].long(), 0)
        sm = sign_mant.long()
        return (((sm >> 7) << 15) | (exp << 7) | (sm & 0x7F)).to(torch.uint16)

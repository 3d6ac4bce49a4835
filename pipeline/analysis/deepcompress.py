"""Deep compression (Han et al. 2016): magnitude pruning, k-means weight sharing, Huffman coding.

What it changes is **storage**, not dense-runtime latency: the decompressed network has the same
shapes and the same dense multiply-adds as before, so ONNX Runtime (or any dense runtime) runs it
exactly as fast as the original. Only a sparse, codebook-aware kernel could turn it into speed.

Every bit is counted (`Storage`):
- per compressed tensor (Conv/Linear weights): the Huffman-coded cluster indices of the kept weights,
  the Huffman-coded relative positions (gaps) of the kept weights, the fp32 codebook, and a header
  (shape, number of entries);
- the two Huffman tables (one code length per symbol, 1 byte each);
- every other tensor (biases, BatchNorm parameters and statistics) dense, at its own precision.

The sparse layout follows the paper: a kept weight stores the gap to the previous kept weight in
`index_bits` bits; a gap too long for that gets filler entries, which decode to weight 0. Cluster code 0
is reserved for that zero, so a layer has 2^bits − 1 shared values. `decompress` rebuilds every tensor
bit for bit from the encoded streams; tests check it equals the pruned, shared-weight model exactly.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from pipeline.core.errors import DeployError

HEADER_BITS_PER_DIM = 32
COUNT_BITS = 32
TABLE_BITS_PER_SYMBOL = 8  # a canonical Huffman table: one code length per symbol


class CompressError(DeployError):
    """A compression request that cannot be carried out (bad sparsity or bit width, nothing to compress)."""


# ---------------------------------------------------------------- pruning and weight sharing
def magnitude_mask(w: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep the (1 − sparsity) largest-magnitude weights of one tensor (ties broken by position)."""
    if not 0.0 <= sparsity < 1.0:
        raise CompressError(f"sparsity must be in [0, 1), got {sparsity}")
    flat = np.abs(w.ravel())
    keep = max(1, int(round(flat.size * (1.0 - sparsity))))
    order = np.argsort(-flat, kind="stable")
    mask = np.zeros(flat.size, dtype=bool)
    mask[order[:keep]] = True
    return mask.reshape(w.shape)


def kmeans_1d(values: np.ndarray, k: int, iters: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means on scalars with linear initialisation (Han et al. found linear init best).

    Returns (centroids float32, labels). Sorting makes assignment a searchsorted on midpoints.
    """
    v = values.astype(np.float64)
    uniq = np.unique(v)
    if uniq.size <= k:  # already shared (e.g. after trained quantization): keep the values exactly
        return uniq.astype(np.float32), np.searchsorted(uniq, v)
    lo, hi = float(v.min()), float(v.max())
    cent = np.linspace(lo, hi, k) if k > 1 else np.array([v.mean()])
    labels = np.zeros(v.size, dtype=np.int64)
    for _ in range(iters):
        mids = (cent[1:] + cent[:-1]) / 2
        labels = np.searchsorted(mids, v)
        sums = np.bincount(labels, weights=v, minlength=k)
        counts = np.bincount(labels, minlength=k)
        new = np.where(counts > 0, sums / np.maximum(counts, 1), cent)
        new = np.sort(new)
        if np.allclose(new, cent):
            cent = new
            break
        cent = new
    mids = (cent[1:] + cent[:-1]) / 2
    labels = np.searchsorted(mids, v)
    return cent.astype(np.float32), labels


# ---------------------------------------------------------------- Huffman
def huffman_lengths(counts: dict[int, int]) -> dict[int, int]:
    """Code length per symbol (a single symbol still gets 1 bit)."""
    if not counts:
        return {}
    if len(counts) == 1:
        return {next(iter(counts)): 1}
    heap = [(c, i, (s,)) for i, (s, c) in enumerate(sorted(counts.items()))]
    heapq.heapify(heap)
    depth = dict.fromkeys(counts, 0)
    tie = len(heap)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            depth[s] += 1
        heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
        tie += 1
    return depth


def canonical_codes(lengths: dict[int, int]) -> dict[int, tuple[int, int]]:
    """Canonical Huffman codes {symbol: (code, length)}: the table is just the lengths."""
    code, prev, out = 0, 0, {}
    for sym, ln in sorted(lengths.items(), key=lambda kv: (kv[1], kv[0])):
        code <<= ln - prev
        out[sym] = (code, ln)
        code += 1
        prev = ln
    return out


def huffman_encode(symbols: np.ndarray, codes: dict[int, tuple[int, int]]) -> tuple[bytes, int]:
    """Pack the symbols' codes MSB-first; returns (bytes, number of bits)."""
    bits_of = {s: np.array([(c >> (ln - 1 - i)) & 1 for i in range(ln)], dtype=np.uint8)
               for s, (c, ln) in codes.items()}
    if len(symbols) == 0:
        return b"", 0
    bits = np.concatenate([bits_of[int(s)] for s in symbols])
    return np.packbits(bits).tobytes(), int(bits.size)


def huffman_decode(data: bytes, nbits: int, count: int, codes: dict[int, tuple[int, int]]) -> np.ndarray:
    """Decode `count` symbols from the first `nbits` bits.

    Table-driven: the next `max_len` bits, read as an integer, index a table of (symbol, length), so
    the Python loop runs once per symbol, not once per bit. Codes longer than 20 bits (very skewed
    streams) fall back to bit-by-bit decoding.
    """
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:nbits].astype(np.int64)
    if bits.size != nbits:
        raise CompressError(f"Huffman stream is shorter than its {nbits} bits: corrupt")
    max_len = max((ln for _, ln in codes.values()), default=1)
    out = np.empty(count, dtype=np.int64)
    if max_len <= 20:
        sym_of = np.full(1 << max_len, -1, dtype=np.int64)
        len_of = np.zeros(1 << max_len, dtype=np.int64)
        for sym, (code, ln) in codes.items():
            lo = code << (max_len - ln)
            sym_of[lo:lo + (1 << (max_len - ln))] = sym
            len_of[lo:lo + (1 << (max_len - ln))] = ln
        padded = np.concatenate([bits, np.zeros(max_len, dtype=np.int64)])
        window = np.zeros(nbits + 1, dtype=np.int64)
        for k in range(max_len):
            window = (window << 1) | padded[k:k + nbits + 1]
        pos = 0
        for i in range(count):
            w = int(window[pos])
            if sym_of[w] < 0 or pos >= nbits:
                raise CompressError("Huffman stream holds an invalid code: corrupt")
            out[i] = sym_of[w]
            pos += int(len_of[w])
    else:
        lookup = {(ln, c): s for s, (c, ln) in codes.items()}
        pos, acc, ln, i = 0, 0, 0, 0
        while i < count:
            if pos >= nbits:
                raise CompressError("Huffman stream ended early: corrupt")
            acc = (acc << 1) | int(bits[pos])
            pos += 1
            ln += 1
            sym = lookup.get((ln, acc))
            if sym is not None:
                out[i] = sym
                i += 1
                acc = ln = 0
    if pos != nbits:
        raise CompressError(f"Huffman stream has {nbits - pos} trailing bits: corrupt")
    return out


# ---------------------------------------------------------------- one tensor
@dataclass
class EncodedTensor:
    """A pruned, weight-shared tensor as stored: codebook, gap and code symbol streams (before Huffman)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    codebook: np.ndarray  # float32, codebook[0] == 0 (the filler / pruned value)
    gaps: np.ndarray  # int, each in [0, 2^index_bits)
    codes: np.ndarray  # int, each in [0, 2^bits)

    def dense(self) -> np.ndarray:
        """Rebuild the dense tensor from the symbol streams."""
        size = int(np.prod(self.shape))
        positions = np.cumsum(self.gaps + 1) - 1
        flat = np.zeros(size, dtype=np.float32)
        flat[positions] = self.codebook[self.codes]
        return flat.reshape(self.shape)


def encode_tensor(name: str, w: np.ndarray, *, sparsity: float, bits: int, index_bits: int) -> EncodedTensor:
    """Prune by magnitude, share weights by k-means (2^bits − 1 clusters + zero), and lay out sparse gaps."""
    mask = magnitude_mask(w, sparsity)
    flat_w, flat_m = w.ravel(), mask.ravel()
    kept = np.flatnonzero(flat_m)
    cent, labels = kmeans_1d(flat_w[kept], 2 ** bits - 1)
    codebook = np.concatenate([[0.0], cent]).astype(np.float32)
    max_gap = 2 ** index_bits - 1
    gaps, codes, prev = [], [], -1
    for pos, lab in zip(kept.tolist(), (labels + 1).tolist()):
        gap = pos - prev - 1
        while gap > max_gap:  # filler zeros (code 0) bridge a long run of pruned weights
            gaps.append(max_gap)
            codes.append(0)
            gap -= max_gap + 1
        gaps.append(gap)
        codes.append(lab)
        prev = pos
    return EncodedTensor(name, tuple(w.shape), str(w.dtype), codebook, np.asarray(gaps, dtype=np.int64),
                         np.asarray(codes, dtype=np.int64))


# ---------------------------------------------------------------- a whole state dict
@dataclass
class Storage:
    """Bits of the compressed model, by part, and of the original."""

    original_bits: int
    code_bits: int = 0
    index_bits: int = 0
    codebook_bits: int = 0
    header_bits: int = 0
    huffman_table_bits: int = 0
    dense_bits: int = 0

    @property
    def total_bits(self) -> int:
        return (self.code_bits + self.index_bits + self.codebook_bits + self.header_bits + self.huffman_table_bits
                + self.dense_bits)

    @property
    def ratio(self) -> float:
        return self.original_bits / self.total_bits

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(total_bits=self.total_bits, original_bytes=self.original_bits // 8,
                 compressed_bytes=-(-self.total_bits // 8), ratio=round(self.ratio, 3))
        return d


@dataclass
class Compressed:
    """The encoded model: Huffman streams per compressed tensor, dense tensors, tables, and its storage count."""

    sparsity: float | dict[str, float]
    bits: int
    index_bits: int
    tensors: list[EncodedTensor]
    streams: dict[str, dict]  # name -> {"codes": (bytes, nbits), "gaps": (bytes, nbits)}
    code_table: dict[int, tuple[int, int]]
    gap_table: dict[int, tuple[int, int]]
    dense: dict[str, np.ndarray]
    storage: Storage
    layers: list[dict] = field(default_factory=list)


def compressible(name: str, arr: np.ndarray) -> bool:
    """Conv and Linear weights (floating, at least 2-D): what deep compression prunes and shares."""
    return arr.ndim >= 2 and np.issubdtype(arr.dtype, np.floating) and name.endswith("weight")


def compress_state(state: dict[str, np.ndarray], *, sparsity: float | dict[str, float] = 0.9, bits: int = 5,
                   index_bits: int = 5) -> Compressed:
    """Deep-compress every Conv/Linear weight of a state dict (numpy arrays); other tensors stay dense.

    `sparsity` is one fraction for every tensor, or a fraction per tensor name (Han et al. prune each
    layer to its own ratio); a per-tensor mapping must name every Conv/Linear weight.
    """
    if not 1 <= bits <= 16:
        raise CompressError(f"--bits must be between 1 and 16, got {bits}")
    if not 1 <= index_bits <= 16:
        raise CompressError(f"index bits must be between 1 and 16, got {index_bits}")
    original = sum(a.size * a.dtype.itemsize * 8 for a in state.values())
    tensors, dense = [], {}
    for name, arr in state.items():
        if compressible(name, arr):
            if isinstance(sparsity, dict) and name not in sparsity:
                raise CompressError(f"no sparsity given for {name}; a per-tensor mapping must name every weight")
            sp = sparsity[name] if isinstance(sparsity, dict) else sparsity
            tensors.append(encode_tensor(name, arr.astype(np.float32), sparsity=sp, bits=bits,
                                         index_bits=index_bits))
        else:
            dense[name] = arr
    if not tensors:
        raise CompressError("the model has no Conv or Linear weight to compress")
    code_counts = Counter(np.concatenate([t.codes for t in tensors]).tolist())
    gap_counts = Counter(np.concatenate([t.gaps for t in tensors]).tolist())
    code_table, gap_table = canonical_codes(huffman_lengths(code_counts)), canonical_codes(huffman_lengths(gap_counts))
    storage = Storage(original_bits=original,
                      huffman_table_bits=TABLE_BITS_PER_SYMBOL * (2 ** bits + 2 ** index_bits),
                      dense_bits=sum(a.size * a.dtype.itemsize * 8 for a in dense.values()))
    streams, layers = {}, []
    for t in tensors:
        codes = huffman_encode(t.codes, code_table)
        gaps = huffman_encode(t.gaps, gap_table)
        streams[t.name] = {"codes": codes, "gaps": gaps}
        header = HEADER_BITS_PER_DIM * len(t.shape) + COUNT_BITS
        storage.code_bits += codes[1]
        storage.index_bits += gaps[1]
        storage.codebook_bits += 32 * t.codebook.size
        storage.header_bits += header
        size = int(np.prod(t.shape))
        layer_bits = codes[1] + gaps[1] + 32 * t.codebook.size + header
        layers.append({"name": t.name, "shape": list(t.shape), "weights": size,
                       "kept": int(np.count_nonzero(t.codes)), "entries": int(t.codes.size),
                       "fillers": int(np.count_nonzero(t.codes == 0)), "bits": layer_bits,
                       "ratio": round(32 * size / layer_bits, 2)})
    kept_sparsity = sparsity if isinstance(sparsity, float) else dict(sparsity)
    return Compressed(kept_sparsity, bits, index_bits, tensors, streams, code_table, gap_table, dense, storage, layers)


def shared_state(c: Compressed) -> dict[str, np.ndarray]:
    """The pruned, weight-shared state dict as it was encoded (before Huffman coding)."""
    out = dict(c.dense)
    out.update({t.name: t.dense() for t in c.tensors})
    return out


def decompress(c: Compressed) -> dict[str, np.ndarray]:
    """Decode every Huffman stream back to symbols and rebuild the dense state dict."""
    out = dict(c.dense)
    for t in c.tensors:
        (cb, cn), (gb, gn) = c.streams[t.name]["codes"], c.streams[t.name]["gaps"]
        codes = huffman_decode(cb, cn, t.codes.size, c.code_table)
        gaps = huffman_decode(gb, gn, t.gaps.size, c.gap_table)
        rebuilt = EncodedTensor(t.name, t.shape, t.dtype, t.codebook, gaps, codes)
        out[t.name] = rebuilt.dense()
    return out

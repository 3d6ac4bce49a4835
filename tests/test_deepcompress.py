"""Deep compression: exact decompression, every bit counted, and `deploy compress --method deep-compression`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pipeline.analysis import deepcompress as dc
from pipeline.cli.app import cli
from pipeline.core.errors import DeployError
from pipeline.core.scaling import resolve_scale
from pipeline.data.datasets import load_dataset
from pipeline.models import build
from pipeline.train.trainer import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def lenet_state(seed: int = 0) -> dict[str, np.ndarray]:
    """LeNet-300-100's shapes on 8×8 digits: 64-300-100-10."""
    rng = np.random.default_rng(seed)
    shapes = {"fc1": (300, 64), "fc2": (100, 300), "fc3": (10, 100)}
    state = {}
    for name, shape in shapes.items():
        state[f"{name}.weight"] = (rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)
        state[f"{name}.bias"] = rng.standard_normal(shape[0]).astype(np.float32) * 0.01
    return state


def test_decompression_reproduces_the_shared_weight_model_exactly():
    state = lenet_state()
    c = dc.compress_state(state, sparsity=0.9, bits=5, index_bits=5)
    shared, restored = dc.shared_state(c), dc.decompress(c)
    for k, w in state.items():
        assert np.array_equal(shared[k], restored[k]), k
        if k.endswith("weight"):
            nz = restored[k][restored[k] != 0]
            assert np.unique(nz).size <= 2 ** 5 - 1  # shared values (0 is reserved)
            assert np.count_nonzero(restored[k]) == round(w.size * 0.1)  # exactly the kept fraction
            kept = restored[k] != 0
            assert np.all(np.abs(w[kept]).min() >= np.abs(w[~kept]).max())  # the largest magnitudes survive
        else:
            assert np.array_equal(restored[k], w)  # biases stay dense and exact


def test_every_bit_is_counted():
    state = lenet_state()
    c = dc.compress_state(state, sparsity=0.9, bits=5, index_bits=5)
    s = c.storage
    assert s.original_bits == 32 * sum(a.size for a in state.values())
    assert s.dense_bits == 32 * (300 + 100 + 10)
    assert s.codebook_bits == 3 * 32 * 32 and s.huffman_table_bits == 8 * (32 + 32)
    assert s.code_bits == sum(c.streams[t.name]["codes"][1] for t in c.tensors)
    assert s.index_bits == sum(c.streams[t.name]["gaps"][1] for t in c.tensors)
    assert s.total_bits == sum(x["bits"] for x in c.layers) + s.huffman_table_bits + s.dense_bits
    # Huffman never does worse than the fixed-width codes it replaces
    entries = sum(t.codes.size for t in c.tensors)
    assert s.code_bits <= 5 * entries and s.index_bits <= 5 * entries
    assert 15 < s.ratio < 40


def test_long_gaps_get_filler_zeros():
    w = np.zeros((1, 1000), np.float32)
    w[0, [0, 500, 999]] = [1.0, -2.0, 3.0]
    t = dc.encode_tensor("w.weight", w, sparsity=0.997, bits=2, index_bits=3)
    assert np.all(t.gaps < 8) and np.count_nonzero(t.codes == 0) > 100
    assert np.array_equal(t.dense(), w)  # three kept weights, three clusters: exact


def test_huffman_round_trip_and_canonical_codes():
    rng = np.random.default_rng(1)
    symbols = rng.choice(6, size=2000, p=[0.5, 0.2, 0.1, 0.1, 0.05, 0.05])
    from collections import Counter

    codes = dc.canonical_codes(dc.huffman_lengths(Counter(symbols.tolist())))
    data, nbits = dc.huffman_encode(symbols, codes)
    assert np.array_equal(dc.huffman_decode(data, nbits, symbols.size, codes), symbols)
    assert codes[0][1] == 1 and nbits < 3 * symbols.size  # the frequent symbol gets one bit, total beats 3 bits/sym
    assert dc.huffman_lengths({7: 10}) == {7: 1}
    with pytest.raises(DeployError, match="corrupt"):
        dc.huffman_decode(data, nbits + 8, symbols.size, codes)


def test_huffman_long_codes_decode_bit_by_bit():
    fib = [1, 1]
    while len(fib) < 26:
        fib.append(fib[-1] + fib[-2])
    codes = dc.canonical_codes(dc.huffman_lengths(dict(enumerate(fib))))
    assert max(ln for _, ln in codes.values()) > 20  # beyond the lookup table: the fallback path
    symbols = np.array([0, 1, 25, 24, 2, 0, 13])
    data, nbits = dc.huffman_encode(symbols, codes)
    assert np.array_equal(dc.huffman_decode(data, nbits, symbols.size, codes), symbols)


def test_bad_requests():
    with pytest.raises(DeployError, match="sparsity"):
        dc.compress_state(lenet_state(), sparsity=1.0)
    with pytest.raises(DeployError, match="bits"):
        dc.compress_state(lenet_state(), bits=0)
    with pytest.raises(DeployError, match="no Conv or Linear"):
        dc.compress_state({"b": np.ones(3, np.float32)})


def test_cli_deep_compression_on_a_run(tmp_path):
    ds = load_dataset("builtin:digits")
    idx = np.concatenate([np.flatnonzero(ds.labels == c)[:10] for c in range(10)])
    data = tmp_path / "d.npz"
    np.savez(data, x=ds.images(idx)[..., 0].astype(np.uint8), y=ds.labels[idx])
    torch.manual_seed(0)
    model = build("efficientnet", resolve_scale(phi=-6), num_classes=10)
    save_checkpoint(tmp_path / "run" / "checkpoint.pt", model, load_dataset(data).default_preprocess(16),
                    [str(c) for c in range(10)], None)
    res = CliRunner().invoke(cli, ["compress", str(tmp_path / "run"), "--method", "deep-compression", "--bits", "4",
                                   "--sparsity", "0.8", "--data", str(data), "--finetune-epochs", "1", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["decompression_exact"] is True and d["ratio"] > 3 and d["bits"] == 4
    assert d["storage"]["compressed_bytes"] < d["storage"]["original_bytes"]
    assert "not dense-runtime latency" in d["latency_note"]
    assert 0 <= d["accuracy"]["compressed"] <= 1 and d["accuracy"]["samples"] == 20
    assert d["finetune_epochs"] == 1 and "retrained 1 epoch" in d["accuracy"]["note"]
    # retraining kept the pruned weights at zero: exactly 20 % of every Conv/Linear weight survives
    assert all(abs(x["kept"] / x["weights"] - 0.2) < 0.5 / x["weights"] + 1e-9 for x in d["layers"])
    out = tmp_path / "run" / "compress-deep-compression"
    assert json.loads((out / "compression.json").read_text())["ratio"] == d["ratio"]
    assert (out / "deepcompressed.npz").stat().st_size < d["storage"]["original_bytes"]
    assert "not dense-runtime latency" in (out / "report.md").read_text()
    res = CliRunner().invoke(cli, ["compress", str(tmp_path / "run"), "--method", "prune"])
    assert res.exit_code == 2 and "--latency" in res.output
    res = CliRunner().invoke(cli, ["compress", str(tmp_path / "run"), "--method", "deep-compression",
                                   "--finetune-epochs", "1", "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "needs --data" in res.output


def test_per_tensor_sparsity_and_recompressing_shared_weights():
    state = lenet_state()
    per = {"fc1.weight": 0.92, "fc2.weight": 0.91, "fc3.weight": 0.74}
    c = dc.compress_state(state, sparsity=per, bits=5)
    kept = {t.name: int(np.count_nonzero(t.codes)) for t in c.tensors}
    assert kept == {"fc1.weight": round(19200 * 0.08), "fc2.weight": round(30000 * 0.09), "fc3.weight": 260}
    # compressing the shared model again changes nothing: already-shared values are kept exactly
    shared = dc.shared_state(c)
    again = dc.compress_state(shared, sparsity=per, bits=5)
    assert all(np.array_equal(dc.shared_state(again)[k], shared[k]) for k in shared)
    with pytest.raises(DeployError, match="no sparsity given for fc3.weight"):
        dc.compress_state(state, sparsity={"fc1.weight": 0.9, "fc2.weight": 0.9})

"""``deploy package verify``: is this package intact, and is its model the run's model?

Checks, in order; the first that fails decides the exit code and names the file:

1. **Integrity** (exit 1, :class:`PackageCorrupt`): the zip or folder reads; ``manifest.json``
   is exactly what was sealed; every file it lists is present with its sha256, and nothing else.
2. **The model loads** in ONNX Runtime on this machine (exit 1 when it does not).
3. **Manifest and model agree** (exit 4, :class:`PackageMismatch`): the input and output names,
   shapes and types, and the ``edgefit.*`` metadata (preprocessing, labels).
4. **A sample**: seeded images of an odd size, run through the *manifest's* preprocessing
   (so resizing and normalisation are exercised as an app would do them), give finite outputs of
   the declared shape.
5. **With the run** (``--run``): the run's ``model.onnx`` must be the one packaged (its sha256)
   and must agree with the packaged model on those samples within the project's tolerance for
   the run's precision (:data:`pipeline.core.compare.TOLERANCES`); exit 4 otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import ModelInvalid, PackageCorrupt, PackageMismatch
from pipeline.core.io import sha256_bytes

SAMPLES = 4
SAMPLE_SIZE = (37, 45)  # H, W: not the model's resolution, so the resize step runs
SAMPLE_SEED = 0


@dataclass
class PackageCheck:
    """The verdict of ``deploy package verify``; ``to_dict()`` is its ``--json`` output."""

    package: str
    files: dict[str, str] = field(default_factory=dict)  # name -> "ok"
    model: str = ""
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    sample: dict[str, Any] = field(default_factory=dict)
    comparison: dict[str, Any] | None = None
    passed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"package": self.package, "passed": self.passed, "files": self.files, "model": self.model,
                "inputs": self.inputs, "outputs": self.outputs, "sample": self.sample, "comparison": self.comparison}


def sample_images(spec_pre, n: int = SAMPLES, seed: int = SAMPLE_SEED) -> np.ndarray:
    """Seeded H×W×3 source images in the manifest's value range, of a size the model does not take."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, spec_pre.input_max, size=(n, *SAMPLE_SIZE, 3)).astype(np.float32)


def _integrity(path: Path, files: dict[str, bytes]) -> dict[str, Any]:
    from pipeline.package.manifest import MANIFEST, unseal

    if MANIFEST not in files:
        raise PackageCorrupt(f"{path}: {MANIFEST} is missing; this is not an edgefit package.")
    manifest = unseal(files[MANIFEST])
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not listed:
        raise PackageCorrupt(f"{path}: {MANIFEST} lists no files.")
    for name, digest in sorted(listed.items()):
        if name not in files:
            raise PackageCorrupt(f"{path}: {name} is listed in {MANIFEST} but missing from the package.")
        if sha256_bytes(files[name]) != digest:
            raise PackageCorrupt(f"{path}: {name} was altered: its sha256 {sha256_bytes(files[name])[:16]}… is not "
                                 f"the manifest's {str(digest)[:16]}…")
    extra = sorted(set(files) - set(listed) - {MANIFEST})
    if extra:
        raise PackageCorrupt(f"{path}: {extra[0]} is not listed in {MANIFEST}; the package was altered.")
    return manifest


def _load(name: str, data: bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    try:
        return ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # pybind exception types
        msg = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise PackageCorrupt(f"{name} does not load in ONNX Runtime on this machine: {msg}") from None


_ORT_TYPES = {"float": "float32", "float16": "float16", "double": "float64"}


def _io(values) -> list[dict[str, Any]]:
    """Name, shape and numpy dtype name of ONNX Runtime's inputs or outputs (``tensor(float)`` -> ``float32``)."""
    out = []
    for v in values:
        kind = v.type.removeprefix("tensor(").removesuffix(")")
        out.append({"name": v.name, "shape": list(v.shape), "dtype": _ORT_TYPES.get(kind, kind)})
    return out


def _agree(name: str, manifest: dict[str, Any], session) -> None:
    """The model's inputs, outputs and edgefit metadata are the manifest's; else :class:`PackageMismatch`."""
    from pipeline.package.manifest import METADATA_KEYS

    for key, got in (("inputs", _io(session.get_inputs())), ("outputs", _io(session.get_outputs()))):
        want = [{k: s[k] for k in ("name", "shape", "dtype")} for s in manifest.get(key) or []]
        if got != want:
            raise PackageMismatch(f"{name}: its {key} {got} are not the manifest's {want}.")
    meta = session.get_modelmeta().custom_metadata_map
    try:
        pre = json.loads(meta[METADATA_KEYS["preprocess"]])
        labels = json.loads(meta[METADATA_KEYS["labels"]]) if METADATA_KEYS["labels"] in meta else None
    except (KeyError, json.JSONDecodeError):
        raise PackageMismatch(f"{name}: its metadata has no readable {METADATA_KEYS['preprocess']}.") from None
    if pre != manifest.get("preprocess"):
        raise PackageMismatch(f"{name}: the preprocessing in its metadata differs from the manifest's.")
    want_labels = manifest.get("labels")
    if (labels is None) != (want_labels is None) or (labels is not None and len(labels) != want_labels["count"]):
        raise PackageMismatch(f"{name}: the labels in its metadata differ from the manifest's.")


def verify_package(package: str | Path, run_dir: str | Path | None = None) -> PackageCheck:
    """Check ``package`` (zip or folder), and with ``run_dir`` its model against the run's; see the module doc."""
    from pipeline.package.archive import read_package
    from pipeline.package.manifest import preprocess_from_spec

    path = Path(package)
    files = read_package(path)
    manifest = _integrity(path, files)
    check = PackageCheck(package=str(path), files={name: "ok" for name in sorted(files)})
    name = (manifest.get("model") or {}).get("file")
    if name not in files:
        raise PackageCorrupt(f"{path}: the manifest's model file {name!r} is not in the package.")
    if "labels.txt" in files and manifest.get("labels"):
        count = len(files["labels.txt"].decode("utf-8").splitlines())
        if count != manifest["labels"]["count"]:
            raise PackageMismatch(f"labels.txt: {count} labels, the manifest says {manifest['labels']['count']}.")
    session = _load(name, files[name])
    _agree(name, manifest, session)
    check.model, check.inputs, check.outputs = name, _io(session.get_inputs()), _io(session.get_outputs())
    pre = preprocess_from_spec(manifest["preprocess"])
    x = pre(sample_images(pre)).numpy().astype(np.float32)
    inp, out = session.get_inputs()[0], manifest["outputs"][0]
    if list(x.shape[1:]) != list(inp.shape[1:]):
        raise PackageMismatch(f"{name}: the manifest's preprocessing gives {list(x.shape[1:])} but the model takes "
                              f"{list(inp.shape[1:])}.")
    got = np.concatenate([session.run(None, {inp.name: x[i:i + 1]})[0] for i in range(len(x))])
    if not np.isfinite(got).all() or list(got.shape[1:]) != list(out["shape"][1:]):
        raise PackageMismatch(f"{name}: a preprocessed sample gives outputs of shape {list(got.shape)} "
                              f"(finite: {bool(np.isfinite(got).all())}), not the manifest's {out['shape']}.")
    check.sample = {"images": len(x), "source_size": list(SAMPLE_SIZE), "input_shape": list(x.shape),
                    "output_shape": list(got.shape), "finite": True}
    if run_dir is not None:
        check.comparison = _against_run(Path(run_dir), manifest, name, x, got)
    check.passed = True
    return check


def _against_run(run_dir: Path, manifest: dict[str, Any], name: str, x: np.ndarray, got: np.ndarray) -> dict:
    from pipeline.core.compare import compare_logits, tolerance
    from pipeline.package.source import read_run

    src = read_run(run_dir)
    data = src.model_path.read_bytes()
    want = manifest["source"]["onnx_sha256"]
    if sha256_bytes(data) != want:
        raise PackageMismatch(f"{src.model_path}: sha256 {sha256_bytes(data)[:16]}… is not the packaged model's "
                              f"source ({want[:16]}…); the run changed after packaging, or this is another run.")
    try:
        ref_session = _load(str(src.model_path), data)
    except PackageCorrupt as exc:
        raise ModelInvalid(str(exc)) from None
    ref_in = ref_session.get_inputs()[0].name
    ref = np.concatenate([ref_session.run(None, {ref_in: x[i:i + 1]})[0] for i in range(len(x))])
    precision = manifest["model"]["precision"]
    tol = tolerance(precision)
    result = compare_logits(ref, got, tol)
    summary = {"reference": str(src.model_path), "precision": precision, "tolerances": tol.parity_dict(),
               "max_abs_err": result.max_abs_err, "cosine_min": result.cosine_min,
               "top1_agreement": result.top1_agreement, "n": result.n, "failures": list(result.failures)}
    if not result:
        raise PackageMismatch(f"{name} disagrees with {src.model_path} beyond the {precision} tolerances: "
                              + "; ".join(result.failures))
    return summary


__all__ = ["PackageCheck", "sample_images", "verify_package"]

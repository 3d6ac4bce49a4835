"""Calibration bundles: the suite as files for a device edgefit cannot reach, and importing what it measured.

``deploy calibrate --bundle DIR`` writes the suite's ONNX models (at the target's highest opset),
``manifest.json`` (each file's sha256, scale and cost, and the timing settings) and the device
runner ``edgefit_device.py``. On the device, ``python3 edgefit_device.py run DIR`` writes
``DIR/results.json``. ``deploy calibrate --import DIR`` checks every model against the manifest
(a file changed after the bundle was made would make the profile lie about what was timed),
then writes a *measured* profile whose ``device`` is what the runner said it ran on.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import DeployError, UsageError
from pipeline.core.io import publish_dir, sha256_file, write_json
from pipeline.predict.profile import SCHEMA_VERSION, Profile, now_iso, save_profile

BUNDLE_FORMAT, RESULTS_FORMAT, VERSION = "edgefit-bundle", "edgefit-results", 1
RECORD_KEYS = ("family", "phi", "phi_depth", "phi_width", "phi_resolution", "resolution", "num_classes", "params",
               "macs")


@dataclass(frozen=True)
class Imported:
    """An imported bundle: the profile written, models the device could not measure, and warnings."""

    profile: Profile
    failed: tuple[str, ...]
    warnings: tuple[str, ...]


def write_bundle(target, out: str | Path, precision: str | None = None, *, quick: bool = False,
                 threads: int | None = None, suite=None, settings=None, runner: bool = True,
                 progress: Callable[[int, int, str], None] | None = None) -> Path:
    """Write the calibration suite for ``target`` into the new or empty folder ``out``; returns the manifest."""
    from pipeline.fit.calibrate import FULL_SUITE, QUICK_SUITE, export_entry, suite_opset, suite_settings
    from pipeline.measure.runner import runner_path

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--bundle {out} exists and is not an empty folder; give a new one.")
    precision = target.check_precision(precision)
    source = runner_path() if runner else None  # fail before minutes of exporting, not after
    suite = suite or (QUICK_SUITE if quick else FULL_SUITE)
    settings = settings or suite_settings(target, quick)
    opset = suite_opset(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:  # built next to its destination and renamed into place whole: never half a bundle
        (tmp / "models").mkdir()
        models = []
        for i, entry in enumerate(suite):
            if progress:
                progress(i, len(suite), entry.label)
            rel = f"models/{i:02d}-{entry.family}.onnx"
            record = export_entry(entry, tmp / rel, precision=precision, opset=opset)
            models.append({"file": rel, "sha256": sha256_file(tmp / rel), **{k: record[k] for k in RECORD_KEYS}})
        if progress:
            progress(len(suite), len(suite), "done")
        if source is not None:
            shutil.copyfile(source, tmp / "edgefit_device.py")
        threads = threads or target.threads if target.runtime == "onnxruntime" else None
        write_json(tmp / "manifest.json", {
            "format": BUNDLE_FORMAT, "version": VERSION, "target": target.name, "runtime": target.runtime,
            "precision": precision, "threads": threads, "settings": settings.to_dict(),
            "suite": "quick" if quick else "full", "models": models})
        publish_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out / "manifest.json"


def _read_json(path: Path, what: str, fmt: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DeployError(f"{path} is missing: {what}.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DeployError(f"{path} is not readable JSON ({e}).") from None
    if not isinstance(data, dict) or data.get("format") != fmt or data.get("version") != VERSION:
        raise DeployError(f"{path} is not an {fmt} file of version {VERSION}.")
    return data


def check_models(folder: Path, manifest: dict) -> None:
    """Every model file the manifest lists exists, inside ``models/``, with the manifest's sha256."""
    root = (folder / "models").resolve()
    for m in manifest.get("models") or []:
        path = (folder / str(m.get("file"))).resolve()
        if root not in path.parents:
            raise DeployError(f"the manifest in {folder} names {m.get('file')!r}, outside models/.")
        if not path.is_file():
            raise DeployError(f"{m['file']} is missing from the bundle {folder}: re-create the bundle.")
        if sha256_file(path) != m.get("sha256"):
            raise DeployError(f"{m['file']} in {folder} does not match the manifest's sha256: it changed after the "
                              "bundle was made; re-create the bundle.")


def import_bundle(target, folder: str | Path, out: str | Path | None = None) -> Imported:
    """Read ``folder``'s manifest and results, check them, and save the measured profile."""
    from pipeline.fit.calibrate import timed_record
    from pipeline.measure.agent import check_device
    from pipeline.predict.targets import device_profile_path

    folder = Path(folder)
    manifest = _read_json(folder / "manifest.json", "this is not a calibration bundle", BUNDLE_FORMAT)
    if manifest.get("target") != target.name:
        raise UsageError(f"the bundle {folder} is for target '{manifest.get('target')}', not '{target.name}'.")
    check_models(folder, manifest)
    results = _read_json(folder / "results.json", "run `python3 edgefit_device.py run DIR` on the device first",
                         RESULTS_FORMAT)
    facts = results.get("facts") if isinstance(results.get("facts"), dict) else {}
    by_file = {r.get("file"): r for r in results.get("results") or [] if isinstance(r, dict)}
    records, failed, runtime = [], [], None
    for m in manifest["models"]:
        r = by_file.get(m["file"])
        if r is None or not r.get("ok"):
            failed.append(f"{m['file']}: {'not in results.json' if r is None else r.get('error', 'failed')}")
            continue
        if r.get("sha256") != m["sha256"]:
            raise DeployError(f"results.json says the device measured other bytes for {m['file']} than the bundle "
                              "holds; re-run the bundle on the device.")
        lat = r.get("latency_ms") or {}
        records.append(timed_record({"kind": "model", "preset": None, **{k: m[k] for k in RECORD_KEYS}}, lat,
                                    r.get("peak_memory_mb"), lat.get("n", 0)))
        runtime = runtime or r.get("runtime") or {}
    if not records:
        raise DeployError(f"no model of {folder} was measured on the device: {failed[0] if failed else 'none'}.")
    profile = Profile(
        target=target.name,
        runtime={"name": runtime.get("name") or manifest["runtime"], "version": runtime.get("version"),
                 **({"provider": runtime["provider"]} if runtime.get("provider") else {})},
        precision=manifest["precision"], provenance="measured",
        device={**facts, "threads": manifest.get("threads")}, created=now_iso(),
        method={**manifest.get("settings", {}), "suite": manifest.get("suite", "bundle"),
                "statistic": "p50 of per-call latency", "batch": 1, "memory": "as reported by the device's runner",
                "bundle": str(folder), "started": results.get("started"), "finished": results.get("finished"),
                "seconds": _seconds(results)},
        records=tuple(records), schema_version=SCHEMA_VERSION)
    out = Path(out) if out is not None else device_profile_path(target.name, manifest["runtime"], profile.precision)
    save_profile(profile, out)
    warnings = tuple(check_device(facts, target, accept=True,
                                  accepted_as="the profile records what the device really is"))
    return Imported(Profile.from_dict(profile.to_dict(), out), tuple(failed), warnings)


def _seconds(results: dict) -> float | None:
    from datetime import datetime

    try:
        start, end = (datetime.fromisoformat(results[k]) for k in ("started", "finished"))
        return round((end - start).total_seconds(), 1)
    except (KeyError, TypeError, ValueError):
        return None


__all__ = ["BUNDLE_FORMAT", "RESULTS_FORMAT", "Imported", "check_models", "import_bundle", "write_bundle"]

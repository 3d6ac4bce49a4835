"""``deploy calibrate``: measure the calibration suite (here, through an agent, or as a bundle) into a profile."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.options import agent_options, json_option, precision_option, targets_dir_option, threads_option
from pipeline.cli.output import emit, key_values, log, progress_bar


def _summary(profile) -> dict:
    from pipeline.predict.predictor import Predictor

    fitted = Predictor.fit(profile)
    nodes = fitted.node_times()
    return {"profile": str(profile.path), "target": profile.target, "records": len(profile.records),
            "device": profile.device.get("model") or profile.device.get("cpu_model"),
            "threads": profile.device.get("threads"), "seconds": profile.method.get("seconds"),
            "heldout_error_pct": fitted.heldout_error_pct,
            # what `deploy predict --onnx` states for a model of unknown architecture (probes held out too)
            "unknown_architecture_error_pct": fitted.error_for(None).pct,
            # with node times (host, ONNX Runtime, fp32), `predict --onnx` uses the per-node model and states this
            **({"node_times": str(nodes.path), "per_node_error_pct": nodes.stated_error_pct} if nodes else {}),
            "memory_heldout_error_pct": fitted.memory_heldout_error_pct, "method": fitted.method,
            **({"drift_pct": profile.method["drift"]["drift_pct"]} if profile.method.get("drift") else {})}


def _warn_drift(profile) -> None:
    from pipeline.fit.calibrate import DRIFT_WARN_PCT

    drift = profile.method.get("drift")
    if drift and abs(drift["drift_pct"]) > DRIFT_WARN_PCT:
        log(f"warning: {drift['reference']} ran {drift['start_ms']:g} ms at the start of calibration and "
            f"{drift['end_ms']:g} ms at the end ({drift['drift_pct']:+g}%): another process was using the CPU; "
            "recalibrate on a quiet machine before trusting predictions from this profile.")


@click.command()
@click.option("--target", "target_name", required=True, help="Target to calibrate.")
@precision_option("Precision to calibrate (default: the target's default).")
@threads_option()
@click.option("--quick", is_flag=True, help="Small suite: about a minute (fp32; int8 about two) instead of up to ten.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the profile here (default: under $EDGEFIT_HOME/profiles/, where predictions find it).")
@agent_options("Measure on the device behind this measurement agent (http://HOST:PORT).")
@click.option("--bundle", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the suite, a manifest and the device runner into this new folder, to run on the device.")
@click.option("--import", "import_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Import a bundle the device has run (DIR/results.json) as a measured profile.")
@targets_dir_option
@json_option("Print the profile summary as JSON.")
def calibrate(target_name, precision, threads, quick, out, agent, agent_token_file, accept_device, bundle, import_dir,
              targets_dir, as_json):
    """Measure a calibration suite on this machine (or --agent, --bundle/--import) and write a measured profile."""
    from pipeline.predict.targets import load_target

    if sum(x is not None for x in (agent, bundle, import_dir)) > 1:
        raise click.UsageError("give at most one of --agent, --bundle and --import.")
    target = load_target(target_name, targets_dir)
    if bundle is not None:
        from pipeline.fit.bundle import write_bundle

        manifest = write_bundle(target, bundle, precision, quick=quick, threads=threads,
                                progress=progress_bar("bundle"))
        log(f"on the device: python3 {bundle.name}/edgefit_device.py run {bundle.name}; then bring the folder back "
            f"and run: deploy calibrate --target {target.name} --import {bundle}")
        emit({"bundle": str(bundle), "manifest": str(manifest)}, as_json, key_values)
        return
    if import_dir is not None:
        from pipeline.fit.bundle import import_bundle

        imported = import_bundle(target, import_dir, out)
        for failed in imported.failed:
            log(f"warning: not measured on the device: {failed}")
        for warning in imported.warnings:
            log(f"warning: {warning}")
        emit(_summary(imported.profile), as_json, key_values)
        return
    from pipeline.fit.calibrate import calibrate as run

    device = None
    if agent is not None:
        from pipeline.measure.farm import agent_device

        device = agent_device(agent, target, token_file=agent_token_file, threads=threads, accept=accept_device,
                              log=log)
    profile = run(target, precision, threads, quick, out, progress_bar("calibrate"), device=device)
    _warn_drift(profile)
    emit(_summary(profile), as_json, key_values)

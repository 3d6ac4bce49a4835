"""``deploy calibrate``: measure the calibration suite on this machine and write a measured profile."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.options import json_option, precision_option, targets_dir_option, threads_option
from pipeline.cli.output import emit, key_values, progress_bar


@click.command()
@click.option("--target", "target_name", required=True, help="Target to calibrate (run this on that device).")
@precision_option("Precision to calibrate (default: the target's default).")
@threads_option()
@click.option("--quick", is_flag=True, help="Small suite: about a minute (fp32; int8 about two) instead of up to ten.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the profile here.")
@targets_dir_option
@json_option("Print the profile summary as JSON.")
def calibrate(target_name, precision, threads, quick, out, targets_dir, as_json):
    """Measure a calibration suite on this machine and write a measured profile."""
    from pipeline.fit.calibrate import calibrate as run
    from pipeline.predict.predictor import Predictor
    from pipeline.predict.targets import load_target

    profile = run(load_target(target_name, targets_dir), precision, threads, quick, out, progress_bar("calibrate"))
    fitted = Predictor.fit(profile)
    summary = {"profile": str(profile.path), "target": profile.target, "records": len(profile.records),
               "threads": profile.device.get("threads"), "seconds": profile.method.get("seconds"),
               "heldout_error_pct": fitted.heldout_error_pct,
               "memory_heldout_error_pct": fitted.memory_heldout_error_pct, "method": fitted.method}
    emit(summary, as_json, key_values)

"""``deploy verify``: torch vs ONNX Runtime accuracy of a run, and/or the device's trtexec timings."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.options import fraction_option, json_option, percentage_points_option, targets_dir_option
from pipeline.cli.output import emit, key_values, log


def verify_text(d: dict) -> str:
    t = d["thresholds"]
    return "\n".join([
        f"{'PASS' if d['passed'] else 'FAIL'}: accuracy on {d['dataset']} ({d['samples']} validation images)",
        f"  torch top-1 {d['torch_top1']:.4f}   onnx top-1 {d['onnx_top1']:.4f}   drop {d['drop_pp']:.3f} pp "
        f"(max {t['max_drop_pp']:g})",
        f"  agreement {d['agreement']:.4f} (min {t['min_agreement']:g})   max |logit diff| "
        f"{d['max_abs_logit_diff']:.3g}",
        f"  model {d['onnx']}",
    ] + [f"  failed: {f}" for f in d["failures"]])


def run_threads(run_dir: Path, targets_dir: str | None) -> int:
    """ONNX Runtime threads for a run: its target's (from ``fit.json``), else the host target's.

    A train-only run (no ``fit.json``) or a target without a thread count (a GPU board) falls
    back to the host target, whose default is one thread: that times and scores reproducibly.
    """
    from pipeline.predict.targets import load_target
    from pipeline.record.rundir import fit_path, read_fit

    name = read_fit(run_dir)["target"] if fit_path(run_dir).is_file() else "host"
    threads = load_target(name, targets_dir).threads
    return threads if threads is not None else load_target("host", targets_dir).threads


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--data", default=None, help="The labelled dataset the checkpoint was trained on.")
@click.option("--trtexec-times", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Timings from trtexec --exportTimes on the device: recorded in fit.json as measured.")
@click.option("--trtexec-log", type=click.Path(exists=True, dir_okay=False), default=None,
              help="trtexec's log (names the device and TensorRT version).")
@click.option("--device", "device_name", default=None, help="Name of the device the timings came from.")
@percentage_points_option("--max-drop-pp", default=0.1, help="Largest allowed top-1 drop of ONNX below torch")
@fraction_option("--min-agreement", default=0.995, help="Smallest allowed top-1 agreement between torch and ONNX")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="ONNX Runtime threads (default: the run's target's, from fit.json; else the host's).")
@targets_dir_option
@json_option("Print the report as JSON (also saved as verify.json).")
def verify(run_dir, data, trtexec_times, trtexec_log, device_name, max_drop_pp, min_agreement, threads, targets_dir,
           as_json):
    """Check accuracy (--data) and/or record device-measured latency (--trtexec-times); exit 4 on failure."""
    from pipeline.train.verify import verify_accuracy

    if data is None and trtexec_times is None:
        raise click.UsageError("give --data (accuracy) and/or --trtexec-times (device latency).")
    if trtexec_times is not None:
        from pipeline.engine.trtexec import record_trtexec_times

        measured = record_trtexec_times(run_dir, trtexec_times, device_name, log_file=trtexec_log,
                                        raise_on_failure=data is None)
        if data is None:
            emit(measured, as_json, key_values)
            return
        log(f"recorded measured latency from {trtexec_times}")
    threads = threads or run_threads(run_dir, targets_dir)
    report = verify_accuracy(run_dir, data, max_drop_pp=max_drop_pp, min_agreement=min_agreement, threads=threads)
    emit(report.to_dict(), as_json, verify_text)
    report.raise_for_failure()

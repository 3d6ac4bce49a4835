"""``deploy verify``: torch vs ONNX Runtime accuracy of a run, a re-measurement on an agent, or trtexec timings."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli.options import (
    agent_options,
    fraction_option,
    json_option,
    percentage_points_option,
    targets_dir_option,
)
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


def junit_xml(run_dir: Path, record, judgement) -> bytes:
    """JUnit XML of a verification: one testcase per check, the measured figures as properties."""
    import xml.etree.ElementTree as ET

    from pipeline.record.verdict import comparison_verdict

    m, budget = record.measured, record.budget
    checks = [(f"latency p{budget.percentile}", judgement.latency), ("memory", judgement.memory)]
    if record.parity:
        checks.append(("parity", comparison_verdict(record.parity.get("failures") or [])))
    if record.accuracy is not None or record.int8 is not None:
        checks.append(("accuracy", judgement.accuracy))
    suite = ET.Element("testsuite", name=f"edgefit verify {run_dir.name}", tests=str(len(checks)),
                       failures=str(sum(v.ok is False for _, v in checks)),
                       skipped=str(sum(v.ok is None for _, v in checks)))
    props = ET.SubElement(suite, "properties")
    figures = {"target": record.target, "precision": record.precision, "budget_latency_ms": budget.latency_ms,
               "budget_memory_mb": budget.memory_mb, "percentile": budget.percentile}
    if m is not None:
        figures |= {"device": m.device, "latency_ms_p50": m.latency_ms, "latency_ms_p90": m.latency_ms_p90,
                    "latency_ms_p99": m.latency_ms_p99, "memory_mb": m.memory_mb, "when": m.when}
    for k, v in figures.items():
        ET.SubElement(props, "property", name=k, value="" if v is None else str(v))
    for name, verdict in checks:
        case = ET.SubElement(suite, "testcase", classname=f"edgefit.{record.target}", name=name)
        if verdict.ok is False:
            ET.SubElement(case, "failure", message=verdict.failure or "failed").text = verdict.failure
        elif verdict.ok is None:
            ET.SubElement(case, "skipped", message="not checked (no budget or nothing measured)")
    return ET.tostring(suite, encoding="utf-8", xml_declaration=True)


def _verify_agent(run_dir: Path, agent: tuple[str, ...], token_file, accept: bool, threads, targets_dir, junit) -> dict:
    """Re-measure the run's model on the agent, record it, write JUnit; exit 4 (after writing) when it misses."""
    from pipeline.core.io import atomic_write
    from pipeline.measure.agent import verify_on_agent
    from pipeline.measure.farm import agent_device
    from pipeline.measure.settings import timing
    from pipeline.predict.targets import load_target
    from pipeline.record.rundir import read_record

    target = load_target(read_record(run_dir).target, targets_dir)
    device = agent_device(agent, target, token_file=token_file, threads=threads, accept=accept, log=log)
    record, judgement = verify_on_agent(run_dir, device, timing("fit"))
    if junit is not None:
        atomic_write(junit, junit_xml(run_dir, record, judgement))
    return {"measured": record.measured.model_dump(mode="json"), "verified": record.verified.model_dump(mode="json"),
            "failures": judgement.failures, "judgement": judgement}


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--data", default=None, help="The labelled dataset the checkpoint was trained on.")
@click.option("--trtexec-times", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Timings from trtexec --exportTimes on the device: recorded in fit.json as measured.")
@click.option("--trtexec-log", type=click.Path(exists=True, dir_okay=False), default=None,
              help="trtexec's log (names the device and TensorRT version).")
@click.option("--device", "device_name", default=None, help="Name of the device the timings came from.")
@click.option("--model-sha256", default=None,
              help="sha256 of the ONNX the trtexec timings are of (when its log is not at hand).")
@agent_options("Re-measure the run's model on the device behind this agent (http://HOST:PORT) and record it; "
               "exit 4 when the budget is missed.")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --agent: write the checks as JUnit XML here (for CI).")
@percentage_points_option("--max-drop-pp", default=0.1, help="Largest allowed top-1 drop of ONNX below torch")
@fraction_option("--min-agreement", default=0.995, help="Smallest allowed top-1 agreement between torch and ONNX")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="ONNX Runtime threads (default: the run's target's, from fit.json; else the host's).")
@targets_dir_option
@json_option("Print the report as JSON (also saved as verify.json).")
def verify(run_dir, data, trtexec_times, trtexec_log, device_name, model_sha256, agent, agent_token_file,
           accept_device, junit, max_drop_pp, min_agreement, threads, targets_dir, as_json):
    """Check accuracy (--data), re-measure on an agent (--agent) or record trtexec timings; exit 4 on failure."""
    from pipeline.train.verify import verify_accuracy

    if agent is not None:
        if data is not None or trtexec_times is not None:
            raise click.UsageError("--agent re-measures the run on its own; give --data/--trtexec-times separately.")
        result = _verify_agent(run_dir, agent, agent_token_file, accept_device, threads, targets_dir, junit)
        judgement = result.pop("judgement")
        emit(result, as_json, key_values)
        judgement.raise_if_failed(see=run_dir / "fit.json")
        return
    if junit is not None:
        raise click.UsageError("--junit goes with --agent.")
    if data is None and trtexec_times is None:
        raise click.UsageError("give --data (accuracy), --agent URL (device latency) and/or --trtexec-times.")
    latency = None
    if trtexec_times is not None:
        from pipeline.engine.trtexec import record_trtexec_times

        measured = record_trtexec_times(run_dir, trtexec_times, device_name, log_file=trtexec_log,
                                        model_sha256=model_sha256)
        latency = measured["verified_latency"]
        if data is None:
            emit(measured, as_json, key_values)
        else:
            log(f"recorded measured latency from {trtexec_times}: verified {latency}")
    if data is not None:
        threads = threads or run_threads(run_dir, targets_dir)
        report = verify_accuracy(run_dir, data, max_drop_pp=max_drop_pp, min_agreement=min_agreement, threads=threads)
        emit(report.to_dict(), as_json, verify_text)
        report.raise_for_failure()
    if latency is False:  # exit 4 whenever a measured figure misses the budget, with or without --data
        from pipeline.record.rundir import read_record
        from pipeline.record.verdict import latency_verdict, raise_if_failed

        record = read_record(run_dir)
        raise_if_failed(latency_verdict(record.measured, record.budget), see=run_dir / "fit.json")

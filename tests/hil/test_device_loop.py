"""The device loop end to end against a REAL agent (edgefit_device.py serve) on 127.0.0.1: the host plays the device.

`make test` runs these with `--agent-local` (edgefit's pytest plugin starts the agent); with
`--agent URL` they run against a real device's agent instead. Without either they are skipped.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner
from conftest import RANGE, tiny_suite, tiny_timing

from pipeline.cli import cli
from pipeline.fit.calibrate import calibrate
from pipeline.measure.agent import AgentDevice
from pipeline.measure.timing import time_onnx
from pipeline.predict.targets import host_profile_path, load_target

pytestmark = pytest.mark.hil


def deploy(agent, *args):
    return CliRunner().invoke(cli, [str(a) for a in args], env=agent.env(), catch_exceptions=False)


@pytest.fixture(scope="module")
def agent_profile(edgefit_agent, tmp_path_factory):
    """The tiny suite calibrated THROUGH the agent (the same code path as `deploy calibrate --agent`)."""
    target = load_target("host")
    out = tmp_path_factory.mktemp("agent-profile") / "host.json"
    device = AgentDevice(edgefit_agent.url, target, token=edgefit_agent.token, threads=1)
    suite = tiny_suite()[:9]  # three families at three scales: enough records for the per-op predictor
    profile = calibrate(target, "fp32", threads=1, out=out, suite=suite, settings=tiny_timing(), device=device)
    return out, profile


def test_calibrate_through_the_agent_writes_a_measured_profile(agent_profile):
    out, profile = agent_profile
    assert profile.provenance == "measured" and len(profile.records) == 9
    assert profile.device.get("runner_version") and profile.device.get("machine")  # the agent's own facts
    assert all(r["latency_ms"]["p50"] > 0 for r in profile.records)


def test_cli_calibrate_help_offers_the_agent():
    r = CliRunner().invoke(cli, ["calibrate", "--help"], catch_exceptions=False)
    assert "--agent" in r.output and "--bundle" in r.output and "--import" in r.output


def test_fit_and_verify_through_the_agent(edgefit_agent, agent_profile, tmp_path):
    import shutil

    dest = host_profile_path("fp32", 1)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(agent_profile[0], dest)
    out = tmp_path / "x"
    r = deploy(edgefit_agent, "fit", "--target", "host", "--latency", "15ms", "--threads", "1",
               *edgefit_agent.cli_args(), "--out", out, *RANGE, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["measured"] is not None and edgefit_agent.url in d["measured"]["device"]
    assert d["verified"]["latency"] is True
    t = time_onnx(out / "model.onnx", threads=1, warmup=3, min_repeats=20, min_time_s=0.3, rounds=3)
    assert min(t.round_p50_ms) <= 15.0  # the shipped file, timed independently here (its quietest round), fits

    junit = tmp_path / "out.xml"
    r = deploy(edgefit_agent, "verify", out, *edgefit_agent.cli_args(), "--junit", junit)
    assert r.exit_code == 0, r.output
    cases = ET.parse(junit).getroot().iter("testcase")
    names = [c.get("name") for c in cases]
    assert any("latency" in n for n in names) and any("memory" in n for n in names)

    record = json.loads((out / "fit.json").read_text())
    record["budget"]["latency_ms"] = 0.001  # a budget no model can meet
    (out / "fit.json").write_text(json.dumps(record))
    r = deploy(edgefit_agent, "verify", out, *edgefit_agent.cli_args(), "--junit", junit)
    assert r.exit_code == 4, r.output
    failures = [c for c in ET.parse(junit).getroot().iter("testcase") if c.find("failure") is not None]
    assert failures and "latency" in failures[0].get("name")

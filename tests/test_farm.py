"""A device farm: two real agents (``edgefit_device.py serve``) on 127.0.0.1, the host playing both devices."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.core.errors import AgentUnreachable, DeployError, UsageError
from pipeline.fit import calibrate as calibrate_module
from pipeline.fit.calibrate import SuiteEntry
from pipeline.measure.agent import AgentDevice
from pipeline.measure.farm import Farm, agent_device, agent_urls
from pipeline.predict.profile import load_profile
from pipeline.predict.targets import load_target
from tests.conftest import tiny_timing
from tests.test_agent import TOKEN, agent
from tests.tinymodels import tiny_onnx

# five small ResNets at 40 px: quick to export, enough jobs for two agents
SUITE = tuple(SuiteEntry("resnet18", dims=(-4.0, w, -12.0)) for w in (-4.0, -3.5, -3.0, -2.5, -2.0))


@pytest.fixture
def tiny_quick_suite(monkeypatch):
    """`deploy calibrate --quick` with a six-model suite and short timings (the agents time them for real)."""
    monkeypatch.setattr(calibrate_module, "QUICK_SUITE", SUITE)
    monkeypatch.setattr(calibrate_module, "suite_settings", lambda target, quick: tiny_timing())


def _dir(tmp_path, name: str):
    """Each agent gets its own folder (its token file and temporary directory)."""
    path = tmp_path / name
    path.mkdir(exist_ok=True)
    return path


def _calibrate(tmp_path, *agents: str):
    token = tmp_path / "client-token"
    token.write_text(TOKEN + "\n")
    out = tmp_path / "profile.json"
    args = ["calibrate", "--target", "host", "--quick", "--threads", "1", "--out", str(out),
            "--agent-token-file", str(token)]
    for url in agents:
        args += ["--agent", url]
    return CliRunner().invoke(cli, args), out


def test_calibrate_splits_the_suite_and_survives_an_agent_going_away(tmp_path, tiny_quick_suite):
    # b answers its /v1/info and one measurement, then exits: it goes away mid-way through the suite
    with agent(_dir(tmp_path, "a")) as a, agent(_dir(tmp_path, "b"), "--max-requests", "2") as b:
        url_a, url_b = f"http://127.0.0.1:{a.port}", f"http://127.0.0.1:{b.port}"
        farm_file = tmp_path / "farm.txt"
        farm_file.write_text(f"# the lab's two identical boxes\n{url_a}\n{url_b}  # the flaky one\n")
        r, out = _calibrate(tmp_path, str(farm_file))
    assert r.exit_code == 0, r.output
    assert f"dropped agent {url_b}" in r.stderr
    profile = load_profile(out)
    by = [rec["agent"] for rec in profile.records]
    assert set(by) == {url_a, url_b} and by.count(url_b) == 1  # split between both, then b's jobs re-sent
    assert [(rec["family"], rec["phi_resolution"]) for rec in profile.records] == [
        (e.family, e.dims[2]) for e in SUITE]  # complete, in suite order
    assert profile.method["dropped_agents"] == [url_b] and profile.device["agents"] == [url_a]


@pytest.mark.slow  # a whole fit through two agents; `make test-all` runs it
def test_fit_on_a_farm_names_the_agent_that_measured(tmp_path, host_profile):
    with agent(_dir(tmp_path, "a")) as a, agent(_dir(tmp_path, "b")) as b:
        token = tmp_path / "client-token"
        token.write_text(TOKEN + "\n")
        urls = [f"http://127.0.0.1:{a.port}", f"http://127.0.0.1:{b.port}"]
        r = CliRunner().invoke(cli, ["fit", "--target", "host", "--latency", "1000ms", "--threads", "1", "--out",
                                     str(tmp_path / "run"), "--family", "resnet18", "--phi-min", "-10",
                                     "--phi-max", "-9.9", "--agent-token-file", str(token), "--agent", urls[0],
                                     "--agent", urls[1], "--json"])
    assert r.exit_code == 0, r.output
    measured = json.loads(r.stdout)["measured"]
    assert measured["agent"] in urls and measured["agent"] in measured["device"]


def test_agents_that_are_not_the_same_device_are_refused(tmp_path):
    host = load_target("host")
    with agent(_dir(tmp_path, "a")) as a, agent(_dir(tmp_path, "b")) as b:
        first = AgentDevice(f"http://127.0.0.1:{a.port}", host, token=TOKEN)
        other = AgentDevice(f"http://127.0.0.1:{b.port}", host, token=TOKEN)
        other._facts = {**other.facts(), "cpu_count": 128, "model": "Another CPU"}  # what a different box says
        with pytest.raises(DeployError, match="not the same device"):
            Farm([first, other]).check()
        assert any("differs" in w for w in Farm([first, other]).check(accept=True))


def test_agent_lists_and_a_farm_with_nobody_left(tmp_path):
    assert agent_urls(("http://a:1", "http://b:2")) == ["http://a:1", "http://b:2"]
    with pytest.raises(UsageError, match="neither"):
        agent_urls(("nope",))
    with pytest.raises(UsageError, match="twice"):
        agent_urls(("http://a:1", "http://a:1"))
    with pytest.raises(AgentUnreachable, match="none of the 2 agents"):
        agent_device(("http://127.0.0.1:9", "http://127.0.0.1:7"), load_target("host"))
    farm = Farm([AgentDevice("http://127.0.0.1:9", load_target("host"))])
    with pytest.raises(DeployError, match="every measurement agent stopped answering"):
        farm.measure(tiny_onnx(tmp_path / "m.onnx"), tiny_timing())

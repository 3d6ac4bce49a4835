"""The pytest plugin users' HIL suites load (entry point pytest11): --agent, the hil marker, edgefit_agent."""

import pytest

pytest_plugins = ["pytester"]

SUITE = """
import pytest

@pytest.mark.hil
def test_on_device(edgefit_agent):
    print("AGENT", edgefit_agent.url, edgefit_agent.token)

def test_everywhere():
    pass
"""


def test_the_entry_point_is_registered():
    from importlib.metadata import entry_points

    assert any(e.value == "pipeline.cli.pytest_plugin" for e in entry_points(group="pytest11"))


def test_hil_tests_skip_with_the_reason_without_an_agent(pytester, monkeypatch):
    monkeypatch.delenv("EDGEFIT_AGENT_URL", raising=False)
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*hardware-in-the-loop test: give the device's agent with --agent URL*"])


def test_an_agent_url_reaches_the_fixture(pytester, monkeypatch, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("-s", "--agent", "http://127.0.0.1:9/",
                                "--agent-token-file", str(token))
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*AGENT http://127.0.0.1:9 s3cret*"])


@pytest.mark.parametrize("flag", ["--agent", "--agent-token-file", "--agent-local"])
def test_the_options_are_documented(pytester, flag):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines([f"*{flag}*"])

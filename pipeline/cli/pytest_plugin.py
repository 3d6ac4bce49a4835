"""edgefit's pytest plugin (entry point ``pytest11: edgefit``): hardware-in-the-loop tests against a device agent.

A user's CI marks tests that need the real device with ``@pytest.mark.hil`` and asks for the
``edgefit_agent`` fixture, which says where the device's measurement agent is::

    pytest --agent http://jetson.lab:8765 --agent-token-file ~/.edgefit/token

* ``--agent URL`` (or ``$EDGEFIT_AGENT_URL``): the agent of the device under test; its token
  comes from ``--agent-token-file`` or ``$EDGEFIT_AGENT_TOKEN``.
* ``--agent-local``: start an agent on 127.0.0.1 from edgefit's own device runner, so this
  machine plays the device (what edgefit's own ``tests/hil`` do in ``make test``).
* Without either, every ``hil`` test is skipped with the reason, never failed: a laptop
  without the device runs the rest of the suite.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

SKIP_REASON = ("hardware-in-the-loop test: give the device's agent with --agent URL (or $EDGEFIT_AGENT_URL), "
               "or --agent-local to let this machine play the device")


@dataclass(frozen=True)
class Agent:
    """Where the device under test answers: its URL and the bearer token (None on a token-less loopback agent)."""

    url: str
    token: str | None = None

    def cli_args(self) -> list[str]:
        """The flags that point a ``deploy`` command at this agent (the token travels in the environment)."""
        return ["--agent", self.url]

    def env(self) -> dict[str, str]:
        return {"EDGEFIT_AGENT_TOKEN": self.token} if self.token else {}


def pytest_addoption(parser) -> None:
    group = parser.getgroup("edgefit", "edgefit hardware-in-the-loop")
    group.addoption("--agent", default=os.environ.get("EDGEFIT_AGENT_URL"),
                    help="URL of the device's measurement agent (default: $EDGEFIT_AGENT_URL).")
    group.addoption("--agent-token-file", default=None,
                    help="File holding the agent's bearer token (default: $EDGEFIT_AGENT_TOKEN).")
    group.addoption("--agent-local", action="store_true",
                    help="Start an agent on 127.0.0.1 from edgefit's device runner: this machine plays the device.")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "hil: needs a real device through its measurement agent (--agent URL)")


def _has_agent(config) -> bool:
    return bool(config.getoption("--agent") or config.getoption("--agent-local"))


def pytest_collection_modifyitems(config, items) -> None:
    if _has_agent(config):
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if "hil" in item.keywords:
            item.add_marker(skip)


def _token(config) -> str | None:
    path = config.getoption("--agent-token-file")
    if path:
        return Path(path).expanduser().read_text(encoding="utf-8").strip()
    return os.environ.get("EDGEFIT_AGENT_TOKEN") or None


@pytest.fixture(scope="session")
def edgefit_agent(request, tmp_path_factory):
    """The :class:`Agent` of the device under test (skips the test when none was given)."""
    config = request.config
    if config.getoption("--agent"):
        yield Agent(config.getoption("--agent").rstrip("/"), _token(config))
        return
    if not config.getoption("--agent-local"):
        pytest.skip(SKIP_REASON)
    with local_agent(tmp_path_factory.mktemp("agent")) as agent:
        yield agent


class local_agent:  # noqa: N801 - used as a context manager, reads like a function
    """An agent on 127.0.0.1 (free port) from edgefit's device runner, with a fresh token; stopped on exit."""

    def __init__(self, workdir: Path, timeout_s: float = 60.0, extra: list[str] | None = None):
        self.workdir, self.timeout_s, self.extra = Path(workdir), timeout_s, list(extra or [])

    def __enter__(self) -> Agent:
        from pipeline.measure.runner import runner_path

        token = secrets.token_hex(16)
        token_file = self.workdir / "token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        cmd = [sys.executable, str(runner_path()), "serve", "--host", "127.0.0.1", "--port", "0",
               "--token-file", str(token_file), *self.extra]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline().strip()  # "edgefit agent listening on http://127.0.0.1:PORT"
        if "listening on " not in line:
            self.__exit__(None, None, None)
            raise RuntimeError(f"the local agent did not start: {line!r}")
        return Agent(line.split("listening on ", 1)[1].strip().rstrip("/"), token)

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()

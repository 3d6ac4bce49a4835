"""``deploy agent serve``: run the measurement agent (the device runner's ``serve``) on this machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click


@click.group()
def agent() -> None:
    """The measurement agent that `fit`, `calibrate` and `verify --agent URL` talk to."""


@agent.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (non-loopback needs a token).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port (0: any free one).")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="File holding the token clients must send (default: $EDGEFIT_AGENT_TOKEN).")
def serve(host: str, port: int, token_file: str | None) -> None:
    """Serve measurements on this machine over HTTP (runs edgefit_device.py serve)."""
    from pipeline.core.errors import DeployError
    from pipeline.measure.runner import runner_path

    cmd = [sys.executable, str(runner_path()), "serve", "--host", host, "--port", str(port)]
    if token_file is not None:
        cmd += ["--token-file", str(Path(token_file))]
    code = subprocess.call(cmd)
    if code != 0:
        raise DeployError(f"the agent exited with status {code} (see its message above).")

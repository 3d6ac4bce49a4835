"""The ``deploy`` group: global flags, the error edge, and the commands registered on it.

Each command lives in its own module as a plain ``click.Command`` and imports nothing from
here; this module adds them to the group, so there is no import cycle. Commands import the
library inside their bodies, which keeps ``deploy --help`` free of torch.
"""

from __future__ import annotations

import click

from pipeline import __version__
from pipeline.cli.agent import agent
from pipeline.cli.build import build
from pipeline.cli.calibrate import calibrate
from pipeline.cli.compress import compress
from pipeline.cli.describe import describe
from pipeline.cli.device_script import device_script
from pipeline.cli.edge import EdgeGroup
from pipeline.cli.fit import fit
from pipeline.cli.grid import grid
from pipeline.cli.package import package
from pipeline.cli.predict import predict
from pipeline.cli.scaling import scaling
from pipeline.cli.similarity import similarity
from pipeline.cli.study import study
from pipeline.cli.targets import targets
from pipeline.cli.train import train
from pipeline.cli.verify import verify

COMMANDS = (describe, targets, calibrate, predict, fit, train, verify, build, package, device_script, agent,
            similarity, compress, scaling, grid, study)


@click.group(cls=EdgeGroup, commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the full traceback of an unexpected error (a bug in edgefit).")
@click.version_option(__version__, prog_name="deploy (edgefit)")
def cli(debug: bool) -> None:
    """edgefit: fit compound-scaled networks to an edge device's latency and memory budget."""


def main() -> None:
    """Console-script entry point (``deploy = pipeline.cli:main``)."""
    cli(prog_name="deploy")

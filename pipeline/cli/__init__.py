"""The ``deploy`` command line (console script ``deploy = pipeline.cli:main``)."""

from pipeline.cli.commands import cli, main

__all__ = ["cli", "main"]

"""The ``deploy`` command line (console script ``deploy = pipeline.cli:main``).

``app`` holds the group and the error edge's flags; each command has its own module.
"""

from pipeline.cli.app import cli, main

__all__ = ["cli", "main"]

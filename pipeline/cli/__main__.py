"""``python -m pipeline.cli``: the same as the ``deploy`` console script."""

from pipeline.cli.app import main

main()

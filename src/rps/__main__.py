"""``python -m rps``: the CLI."""

from rps.cli import main

main()

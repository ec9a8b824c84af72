"""`python -m harvester`: the `harvester` command, for where its script is not on PATH."""

from harvester.cli import main

main(prog_name="harvester")

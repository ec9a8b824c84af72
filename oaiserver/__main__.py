"""`python -m oaiserver`: the `oaiserver` command, for where its script is not on PATH."""

from oaiserver.cli import main

main(prog_name="oaiserver")

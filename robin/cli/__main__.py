"""`python -m robin.cli`: the `robin` command without its console script (tests, benchmarks)."""
from robin.cli import main

main(prog_name="robin")  # not "python -m robin.cli": the name usage lines and shell completion use

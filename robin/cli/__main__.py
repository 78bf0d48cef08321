"""`python -m robin.cli`: the `robin` command without its console script (tests, benchmarks)."""
from robin.cli import main

main()

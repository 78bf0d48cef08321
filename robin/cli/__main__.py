"""`python -m robin.cli`: the `robin` command without its console script (tests, benchmarks)."""
from robin.cli import main

if __name__ == "__main__":  # importing the module (a walk over robin's modules) runs nothing
    main(prog_name="robin")  # not "python -m robin.cli": the name usage lines and shell completion use

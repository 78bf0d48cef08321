"""`robin completion bash|zsh|fish`: the shell's completion script, click's, for commands, options, choices (kinds,
output formats) and files."""
from __future__ import annotations

import click
from click.shell_completion import get_completion_class

SHELLS = ("bash", "zsh", "fish")


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script of SHELL. Load it in the current shell with `source <(robin completion bash)`
    (zsh: `source <(robin completion zsh)`; fish: `robin completion fish | source`), or write it where the shell
    reads completions at start: ~/.local/share/bash-completion/completions/robin, a directory of $fpath as _robin,
    ~/.config/fish/completions/robin.fish."""
    root = click.get_current_context().find_root().command
    # The program is `robin` however this one was started (python -m robin.cli in tests): the script calls `robin`.
    script = get_completion_class(shell)(root, {}, "robin", "_ROBIN_COMPLETE")
    click.echo(script.source(), nl=False)

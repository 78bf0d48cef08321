"""`robin config ...`: the contexts of ~/.config/robin/config.toml, kept as `kubectl config` keeps kubeconfig's."""
from __future__ import annotations

import os

import click

from robin.cli.contexts import Context, ContextError, ContextFile
from robin.cli.frame import Column, output_option, show

CONTEXT_COLUMNS = (
    Column("current"),
    Column("name"),
    Column("url"),
    Column("token_file", "TOKEN FILE"),
    Column("project"),
)


def _load() -> ContextFile:
    try:
        return ContextFile.load()
    except ContextError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group("config")
def config_group() -> None:
    """The client's contexts: robin APIs by name, each with its token ($XDG_CONFIG_HOME/robin/config.toml, else
    ~/.config/robin/config.toml)."""


@config_group.command("get-contexts")
@output_option
def get_contexts(output) -> None:
    """Every context; `*` marks the current one. Tokens written into the file are not shown."""
    file = _load()
    rows = [{"current": "*" if name == file.current else "", "name": name, "url": context.url,
             "token_file": context.token_file, "project": context.project} for name, context in file.contexts.items()]
    show(output, rows, CONTEXT_COLUMNS)


@config_group.command("current-context")
def current_context() -> None:
    """The current context's name (exit status 1 when there is none)."""
    file = _load()
    if not file.current:
        raise click.ClickException(f"no current context in {file.path}: `robin config use-context NAME`")
    click.echo(file.current)


@config_group.command("use-context")
@click.argument("name")
def use_context(name) -> None:
    """Make context NAME the current one."""
    file = _load()
    if name not in file.contexts:
        raise click.ClickException(f"no context {name!r} in {file.path}: `robin config set-context {name} --url ...`")
    file.current = name
    file.save()


@config_group.command("set-context")
@click.argument("name")
@click.option("--url", help="robin's API, e.g. https://robin.example:8080")
@click.option("--token-file", type=click.Path(dir_okay=False), help="the file holding the token to send it")
@click.option("--project", help="the project of commands that are given none")
@click.option("--use", is_flag=True, help="and make it the current context")
def set_context(name, url, token_file, project, use) -> None:
    """Add context NAME, or change the fields given of an existing one. The token stays in its own file: the
    context names the file."""
    file = _load()
    if token_file and not token_file.startswith("~"):  # a relative name would change meaning with the directory
        token_file = os.path.abspath(token_file)
    old = file.contexts.get(name, Context(name))
    context = Context(name, url=old.url if url is None else url, token=old.token, project=old.project
                      if project is None else project, token_file=old.token_file if token_file is None else token_file)
    if not context.url:
        raise click.UsageError(f"context {name!r} needs --url")
    file.contexts[name] = context
    if use or not file.current:
        file.current = name
    file.save()


@config_group.command("delete-context")
@click.argument("name")
def delete_context(name) -> None:
    """Remove context NAME (and make none current if it was)."""
    file = _load()
    if file.contexts.pop(name, None) is None:
        raise click.ClickException(f"no context {name!r} in {file.path}")
    if file.current == name:
        file.current = ""
    file.save()

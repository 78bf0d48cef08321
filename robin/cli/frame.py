"""What every command that is a client of robin's API shares: where the API is and which token to send (flags,
then an explicitly chosen context, then ROBIN_URL with ROBIN_TOKEN or ROBIN_TOKEN_FILE, then the current context),
sizes as people write them, the output formats, and robin's refusals as `code: message` with exit status 1."""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import io
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import click

from robin.cli.contexts import ContextError, ContextFile
from robin.config import ConfigError
from robin.units import human_bytes

OUTPUTS = ("table", "wide", "json", "yaml", "csv", "name")


# --- where the API is ---------------------------------------------------------------------------

def client_options(command):
    """--url, --token-file and --context, handed to the command as `api`: a function making the client."""
    @click.option("--context", "context_name", envvar="ROBIN_CONTEXT",
                  help="a context of ~/.config/robin/config.toml [ROBIN_CONTEXT, its current-context]")
    @click.option("--token-file", help="a file holding the API token [ROBIN_TOKEN, ROBIN_TOKEN_FILE, the context's]")
    @click.option("--url", help="robin's API, e.g. https://robin.example:8080 [ROBIN_URL, the context's]")
    @functools.wraps(command)
    def wrapper(url, token_file, context_name, **kwargs):
        return command(api=Target(url, token_file, context_name), **kwargs)

    return wrapper


@dataclass(frozen=True)
class Target:
    """Where the command's requests go. A URL and its token always come from the same place (the flags aside), so
    one API's token is never sent to another's URL."""

    url: str | None
    token_file: str | None
    context_name: str | None

    def client(self):
        from robin.client import ClientConfig, RobinClient

        try:
            context = self._context()
            if context is None:  # the environment (ROBIN_URL, ROBIN_TOKEN[_FILE]) or ROBIN_CONFIG_FILE's [client]
                # A file named on the command line wins over ROBIN_TOKEN from the environment.
                config = ClientConfig.from_env(url=self.url, token="" if self.token_file else None,
                                               token_file=self.token_file)
            else:
                _require_complete(context, self)
                token_file = self.token_file or os.path.expanduser(context.token_file)
                config = ClientConfig.from_env(url=self.url or context.url,
                                               token="" if self.token_file else context.token, token_file=token_file)
        except (ConfigError, ContextError) as exc:
            raise click.ClickException(str(exc)) from exc
        return RobinClient(config)

    def default_project(self) -> str | None:
        """The chosen context's project, for commands given none."""
        try:
            context = self._context()
        except ContextError as exc:
            raise click.ClickException(str(exc)) from exc
        return (context.project or None) if context else None

    def _context(self):
        """The context to use: the one named by --context (or ROBIN_CONTEXT); else, unless ROBIN_URL is set, the
        file's current one; None for the environment."""
        if not self.context_name and os.environ.get("ROBIN_URL"):
            return None
        return ContextFile.load().chosen(self.context_name)


def _require_complete(context, flags: Target) -> None:
    """A context the flags do not complete names its URL and its token: say which context lacks what."""
    if not (flags.url or context.url):
        raise ContextError(f"context {context.name!r} has no url: robin config set-context {context.name} --url ...")
    if not (flags.token_file or context.token_file or context.token):
        raise ContextError(f"context {context.name!r} has no token-file: robin config set-context {context.name} "
                           f"--token-file ...")


@contextlib.contextmanager
def refusals() -> Iterator[None]:
    """robin's refusal (or its silence) as `code: message` on stderr, exit status 1; never a traceback."""
    from robin.client import RobinApiError

    try:
        yield
    except RobinApiError as exc:
        click.echo(f"{exc.code}: {exc.explanation}", err=True)
        sys.exit(1)


def waiting(doing: str, slow: bool, call):
    """`call()`, with what it waits for and the seconds so far on a terminal's stderr, updated every second: the API
    answers a slow request (a refresh over thousands of volumes, a flatten) only once it is done, so time is all
    there is to show."""
    if not (slow and sys.stderr.isatty()):
        return call()
    started, done = time.monotonic(), threading.Event()

    def tick() -> None:
        while not done.wait(1.0):
            click.echo(f"\r{doing}... {time.monotonic() - started:.0f}s", err=True, nl=False)

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        return call()
    finally:
        done.set()
        ticker.join()
        click.echo(f"\r{doing}... done in {time.monotonic() - started:.0f}s", err=True)


def all_pages(fetch: Callable[[str | None], dict]) -> list[dict]:
    """Every item of a paginated listing: `fetch(cursor)` answers one page."""
    items, cursor = [], None
    while True:
        page = fetch(cursor)
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return items


# --- sizes --------------------------------------------------------------------------------------

SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kKMGTPE]i?)?B?\Z")
MULTIPLIERS = {None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
               "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def parse_size(text: str) -> int:
    """Bytes from `10Gi`, `500M`, `2T`, `1.5GiB`, `4096`: Ki/Mi/Gi/Ti/Pi/Ei are powers of 1024, k/M/G/T/P/E of 1000
    (as Kubernetes reads them; `rbd --size 10G` means GiB, robin's 10G does not). Exact: a fraction of a byte is
    refused, never rounded. ValueError otherwise."""
    match = SIZE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a size: a number and a unit such as 10Gi, 500M, 2T or 4096 (bytes)")
    try:
        size = Decimal(match[1]) * MULTIPLIERS[match[2]]
    except InvalidOperation as exc:
        raise ValueError(f"{text!r} is not a size") from exc
    if size != size.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(size)


class SizeType(click.ParamType):
    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SIZE_TYPE = SizeType()


# --- output -------------------------------------------------------------------------------------

def output_option(command):
    return click.option("-o", "--output", type=click.Choice(OUTPUTS), default="table", show_default=True,
                        help="table and wide: for people (sizes in KiB/MiB/GiB); json and yaml: what the API "
                             "answered; csv: the table's fields, in bytes; name: names only, one a line")(command)


@dataclass(frozen=True)
class Column:
    """A field of a resource in tables and CSV: `path` is its key in the API's JSON (dots for nested fields)."""

    path: str
    header: str = ""
    kind: str = "text"  # text, size (bytes) or time (RFC 3339)
    wide: bool = False  # only in -o wide (and csv)
    default: object = None  # what the command knows that the answer does not say (a volume's kind)

    def value(self, item: dict):
        for key in self.path.split("."):
            item = item.get(key) if isinstance(item, dict) else None
        return self.default if item is None else item

    def cell(self, item: dict) -> str:
        value = self.value(item)
        if value is None or value == "":
            return "-"
        if self.kind == "size":
            return human_bytes(value)
        if self.kind == "time":
            return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if isinstance(value, (dict, list)):
            return json.dumps(value, separators=(",", ":"))
        return str(value)


def with_defaults(columns: tuple[Column, ...], **defaults) -> tuple[Column, ...]:
    """`columns`, those named in `defaults` showing that value where the answer lacks the field."""
    return tuple(dataclasses.replace(column, default=defaults[column.path]) if column.path in defaults else column
                 for column in columns)


def show(output: str, data, columns: tuple[Column, ...], name: Callable[[dict], str] = lambda item: item["name"]):
    """Print one resource (a dict) or a listing (a list of them) in the chosen format."""
    if output == "json":
        click.echo(json.dumps(data, indent=2))
    elif output == "yaml":
        import yaml

        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)
    elif output == "name":
        for item in data if isinstance(data, list) else [data]:
            click.echo(name(item))
    elif output == "csv":
        click.echo(_csv(data if isinstance(data, list) else [data], columns), nl=False)
    elif isinstance(data, list):
        shown = [column for column in columns if output == "wide" or not column.wide]
        for line in _aligned([[column.header or column.path.upper() for column in shown],
                              *([column.cell(item) for column in shown] for item in data)]):
            click.echo(line)
    else:
        shown = [column for column in columns if output == "wide" or not column.wide]
        for line in _aligned([[(column.header or column.path.upper()) + ":", column.cell(data)] for column in shown]):
            click.echo(line)


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[index]) for row in rows) for index in range(len(rows[0]))]
    return ["  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def _csv(items: list[dict], columns: tuple[Column, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([column.path for column in columns])
    for item in items:
        writer.writerow(["" if column.value(item) is None else _csv_cell(column.value(item)) for column in columns])
    return buffer.getvalue()


def _csv_cell(value) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (dict, list)) else str(value)

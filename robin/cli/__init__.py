"""The `robin` command."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import click

from robin import config
from robin.cli.frame import Column, all_pages, client_options, output_option, refusals, show, waiting
from robin.config import ConfigError, Settings


def _settings(**overrides) -> Settings:
    settings = _section(Settings, **overrides)
    return settings if settings.ceph_conf else _with_dev_cluster(settings)


def _section(cls, **overrides):
    """A configuration section, its errors as the command's (`Error: ROBIN_...`, exit status 1)."""
    try:
        return cls.from_env(**overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _with_dev_cluster(settings: Settings) -> Settings:
    """No Ceph configured: the dev cluster's when one exists, so `make run` needs no configuration."""
    from robin.dev.cluster import DevCluster

    conf = DevCluster(Path(settings.dev_cluster_dir)).conf_path
    return dataclasses.replace(settings, ceph_conf=str(conf)) if conf.exists() else settings


def _app_context():
    from robin import create_app

    return create_app(_settings()).app_context()


@click.group()
@click.version_option(package_name="robin", prog_name="robin")  # pyproject.toml's version, as installed
def main() -> None:
    """robin: RBD images and CephFS paths per project, on Ceph."""
    from robin import log

    settings = _settings()
    log.configure(settings.log_level, settings.log_format)


# --- serve --------------------------------------------------------------------------------------

@main.command()
@click.option("--host", help="address to listen on [ROBIN_HOST, default 127.0.0.1]")
@click.option("--port", type=int, help="port [ROBIN_PORT, default 8080]")
@click.option("--workers", type=int, help="gunicorn worker processes [ROBIN_WORKERS, default 0: two per CPU, 2 to 8]")
@click.option("--threads", type=int, help="threads per worker [ROBIN_THREADS, default 4]")
def serve(host, port, workers, threads) -> None:
    """Serve the API with gunicorn (replaces this process)."""
    settings = _settings(host=host, port=port, workers=workers, threads=threads)
    _require_migrated(settings.database_url)
    metrics_dir = Path(settings.state_dir) / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)  # counters of an earlier run would be merged in
    metrics_dir.mkdir(parents=True)
    handed = {config.PROMETHEUS_MULTIPROC_DIR: str(metrics_dir)}
    if settings.ceph_conf:  # the workers read their settings afresh: the conf this command found, too
        handed["ROBIN_CEPH_CONF"] = settings.ceph_conf
    argv = [
        sys.executable, "-m", "gunicorn",
        "--config", "python:robin.gunicorn_conf",
        "--no-control-socket",  # a per-user socket in $HOME: two servers would fight over it
        "--bind", f"{settings.host}:{settings.port}",
        "--workers", str(settings.workers),
        "--threads", str(settings.threads),
        # A worker stuck longer than any Ceph call may take is restarted.
        "--timeout", str(int(settings.ceph_timeout * 3 + 30)),
        "robin.wsgi:app",
    ]
    os.execve(sys.executable, argv, config.child_environment(handed))


def _require_migrated(url: str) -> None:
    from robin.db import pending_migrations

    pending = pending_migrations(url)
    if pending:
        raise click.ClickException(f"the database needs migrations {pending}: run `robin db upgrade` first")


# --- db -----------------------------------------------------------------------------------------

@main.group("db")
def db_group() -> None:
    """Database schema migrations (Alembic)."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Migrate ROBIN_DATABASE_URL to the latest (or given) revision."""
    from robin.db import upgrade

    upgrade(_settings().database_url, revision)


@db_group.command("revision")
@click.option("-m", "--message", required=True)
@click.option("--id", "rev_id", required=True, help="the revision's name, e.g. 0002_cephfs_paths")
def db_revision(message: str, rev_id: str) -> None:
    """Write a new migration from the difference between the models and the database."""
    from robin.db import new_revision

    new_revision(_settings().database_url, message, rev_id)


# --- dev-cluster --------------------------------------------------------------------------------

@main.group("dev-cluster")
def dev_cluster() -> None:
    """A single-node Ceph cluster on 127.0.0.1 for development, tests and benchmarks."""


def _cluster(directory: str | None):
    from robin.dev.cluster import DevCluster

    return DevCluster(Path(directory or _settings().dev_cluster_dir))


DIR_OPTION = click.option("--dir", "directory", type=click.Path(file_okay=False),
                          help="where the cluster lives [ROBIN_DEV_CLUSTER_DIR]")


@dev_cluster.command("up")
@DIR_OPTION
def dev_cluster_up(directory) -> None:
    """Start the cluster (or reuse a healthy one); print the path of its ceph.conf."""
    from robin.dev.cluster import DevClusterError

    try:
        click.echo(_cluster(directory).up())
    except DevClusterError as exc:
        raise click.ClickException(str(exc)) from exc


@dev_cluster.command("down")
@DIR_OPTION
def dev_cluster_down(directory) -> None:
    """Stop the daemons this cluster started (by pid) and remove its directory."""
    _cluster(directory).down()


@dev_cluster.command("status")
@DIR_OPTION
def dev_cluster_status(directory) -> None:
    """Print the cluster's state as JSON; exit 1 unless it is up and healthy."""
    status = _cluster(directory).status()
    click.echo(json.dumps(status, indent=2, default=str))
    if not status.get("healthy"):
        sys.exit(1)


# --- maintenance ----------------------------------------------------------------------------------

@main.command()
@click.option("--older-than", type=float, default=300, show_default=True,
              help="only rows untouched this many seconds: younger ones may belong to a request under way")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def reconcile(older_than: float, as_json: bool) -> None:
    """Finish or undo operations a crash left half-done; report drift between the database and Ceph."""
    from datetime import timedelta

    from robin.reconcile.service import reconcile as run

    with _app_context():
        report = run(timedelta(seconds=older_than))
    if as_json:
        click.echo(json.dumps({"fixed": report.fixed, "drift": report.drift, "errors": report.errors}, indent=2))
        return
    for bucket in ("fixed", "drift", "errors"):
        for entry in getattr(report, bucket):
            fields = {**{k: v for k, v in entry.items() if k not in ("kind", "evidence")}, **entry.get("evidence", {})}
            details = " ".join(f"{k}={v}" for k, v in fields.items())
            click.echo(f"{bucket:6} {entry['kind']:30} {details}")
    click.echo(f"{len(report.fixed)} fixed, {len(report.drift)} drift, {len(report.errors)} errors", err=True)


@main.command()
def purge() -> None:
    """Purge the volumes whose time in the trash is over (robin serve also does this periodically)."""
    from robin.volumes.service import purge_due

    with _app_context():
        counts = purge_due()
    click.echo(json.dumps(counts))


# --- gateway ------------------------------------------------------------------------------------

@main.command()
@click.option("--host", help="address to listen on [ROBIN_GATEWAY_HOST, default 127.0.0.1]")
@click.option("--port", type=int, help="port [ROBIN_GATEWAY_PORT, default 2022]")
def gateway(host, port) -> None:
    """The data gateway, run as root on the gateway's host: the node agent that mounts the volumes activated
    through /v1 (ROBIN_GATEWAY_DIR/volumes, rbd-fuse or ROBIN_GATEWAY_MOUNTER, ceph-fuse), unmounts the deactivated
    ones, runs their checks and records each one's status in the database; and SFTP into the mounted volumes, for
    their accounts. One agent acts at a time (a database lock): a second one serves SFTP and waits. Runs until
    SIGTERM/SIGINT; mounts stay for the next start. The SSH host key is kept in ROBIN_GATEWAY_DIR."""
    import asyncssh

    from robin.db import db
    from robin.gateway.server import AgentFailed, run

    settings = _settings(gateway_host=host, gateway_port=port)
    _require_migrated(settings.database_url)
    db.configure(settings.database_url, lock_timeout=settings.database_lock_timeout)
    try:
        run(settings)
    except (OSError, asyncssh.KeyImportError, AgentFailed) as exc:  # the port is taken, the key unreadable, ...
        raise click.ClickException(str(exc)) from exc
    finally:
        db.dispose()


# --- audit (reports for storage admins) ---------------------------------------------------------

@main.group()
def audit() -> None:
    """Quota, usage and drift reports for storage admins (read-only unless told to adopt)."""


DIRECT_OPTION = click.option(
    "--direct", is_flag=True,
    help="read this host's database and Ceph (ROBIN_DATABASE_URL, ROBIN_CEPH_CONF) instead of robin's API: on a "
         "robin host while its API is down")


@audit.command("usage")
@click.option("--refresh", is_flag=True, help="measure every volume now instead of reading the last figures")
@click.option("--volumes", "with_volumes", is_flag=True, help="one line per volume instead of per project")
@click.option("--top", type=click.IntRange(0, 1000), default=10, show_default=True, help="top consumers listed")
@click.option("--json", "as_json", is_flag=True, help="print the whole report as JSON (as the API returns it)")
@click.option("--csv", "as_csv", is_flag=True, help="print the projects (or, with --volumes, the volumes) as CSV")
@DIRECT_OPTION
@client_options
def audit_usage(api, refresh: bool, with_volumes: bool, top: int, as_json: bool, as_csv: bool, direct: bool) -> None:
    """Quota, provisioned and used bytes per cluster, pool, project and volume, with the top consumers
    (admins and auditors; --refresh: admins)."""
    from robin.audit import usage_report

    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    if direct:
        report = _usage_direct(refresh, with_volumes, top)
    else:
        with refusals():
            params = {"refresh": str(refresh).lower(), "volumes": str(with_volumes).lower(), "top": top}
            report = waiting("measuring every volume", refresh,
                              lambda: api.client().request("GET", "/api/v2/audit/usage", params=params))
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif as_csv:
        rows, columns = ((report["volumes"], usage_report.VOLUME_COLUMNS) if with_volumes
                         else (report["projects"], usage_report.PROJECT_COLUMNS))
        click.echo(usage_report.as_csv(rows, columns), nl=False)
    else:
        click.echo(usage_report.as_table(report, with_volumes))


def _usage_direct(refresh: bool, with_volumes: bool, top: int) -> dict:
    from robin.audit import usage
    from robin.audit.schemas import UsageReportSchema
    from robin.auth.identity import LOCAL_ADMIN

    with _app_context():
        return UsageReportSchema().dump(usage.report(LOCAL_ADMIN, refresh_now=refresh, with_volumes=with_volumes,
                                                     top=top))


@audit.command("drift")
@click.option("--older-than", type=float, default=300, show_default=True,
              help="leave out rows in a transitional state younger than this many seconds (a request under way)")
@click.option("--json", "as_json", is_flag=True, help="print the report (or the adoption results) as JSON")
@click.option("--adopt-into", "project", help="adopt every orphan into this project: a dry run unless --yes")
@click.option("--yes", is_flag=True, help="with --adopt-into: adopt them, each adopted or refused on its own")
@click.option("--full", is_flag=True, help="open every RBD image, not at most ROBIN_DRIFT_OPENS a pool (changed first)")
@click.option("--progress/--no-progress", default=None, help="a progress bar while adopting [on a terminal]")
@DIRECT_OPTION
@client_options
def audit_drift(api, older_than: float, as_json: bool, project: str | None, yes: bool, full: bool,
                progress: bool | None, direct: bool) -> None:
    """What differs between the database and Ceph: orphans, missing objects, size and quota mismatches,
    unknown or missing snapshots, trash past its purge time (admins and auditors; adopting: admins). Exit status 1
    when anything was refused."""
    from robin.cli import adoption

    if yes and not project:
        raise click.UsageError("--yes adopts: it needs --adopt-into PROJECT")
    if direct:
        report, steps = _drift_direct(older_than, project, yes, full)
    else:
        client = api.client()
        with refusals():
            report = client.request("GET", "/api/v2/audit/drift", params={"older_than": older_than,
                                                                           "full": str(full).lower()})
            steps = adoption.plan(report["findings"], project) if project else None
            if steps is not None and yes:
                steps = adoption.adopt(client, project, steps, sys.stderr.isatty() if progress is None else progress)
    if project is None:
        _print_drift(report, as_json)
        return
    _print_adoption(steps, project, yes, as_json)
    if any("refused" in step for step in steps) and yes:
        sys.exit(1)


def _drift_direct(older_than: float, project: str | None, yes: bool, full: bool) -> tuple[dict, list | None]:
    from datetime import timedelta

    from robin.audit.drift import report_for
    from robin.auth.identity import LOCAL_ADMIN
    from robin.volumes import adoption

    with _app_context():
        report = report_for(LOCAL_ADMIN, timedelta(seconds=older_than), full=full)
        if project is None:
            return report, None
        steps = adoption.plan(report["findings"], project)
        return report, adoption.adopt_planned(LOCAL_ADMIN, project, steps) if yes else steps


def _print_drift(report: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for finding in report["findings"]:
        evidence = " ".join(f"{key}={value}" for key, value in finding["evidence"].items() if value not in (None, []))
        click.echo(f"{finding['kind']:26} project={finding['project'] or '-'} {evidence}")
    for error in report["errors"]:
        click.echo(f"{'error':26} " + " ".join(f"{key}={value}" for key, value in error.items()))
    found = {kind: count for kind, count in report["counts"].items() if count}
    click.echo(f"{len(report['findings'])} findings {found or ''}, {len(report['errors'])} errors", err=True)
    coverage = report["coverage"]
    click.echo(f"RBD images: {coverage['rbd_images']}, opened {coverage['opened']}, unchanged since their last "
               f"check {coverage['from_last_check']}, deferred {coverage['deferred']}", err=True)


def _print_adoption(steps: list[dict], project: str, done: bool, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"project": project, "dry_run": not done, "orphans": steps}, indent=2))
        return
    for step in steps:
        verdict = "refused: " + step["refused"] if "refused" in step else ("adopted" if done else "would adopt")
        click.echo(f"{step['collection']:13} {step['name']}: {verdict}")
    if not done:
        click.echo(f"dry run: nothing changed; add --yes to adopt into {project!r}", err=True)

# --- commands that are clients of robin's API ------------------------------------------------------
# (robin.cli.resources has the project's resources; the audit trail is here, beside the audit's other reports)

def _time_option(_ctx, param, value: str | None) -> str | None:
    from robin.audit.events_client import time_argument

    if value is None:
        return None
    try:
        return time_argument(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: a duration back from now (90s, 15m, 1h, 2d, 1w) or an RFC 3339 time "
                                 f"with its zone ({exc})", param=param) from exc


@audit.command("events")
@client_options
@click.option("--project", help="only this project's events")
@click.option("--actor", help="only this actor's, as events name it (token:<id>:<name>)")
@click.option("--action", help="only this action, as events name it (DELETE /api/v2/projects/<project>/...)")
@click.option("--outcome", type=click.Choice(["success", "failure", "pending"]), help="only events of this outcome")
@click.option("--target", help="only events of this volume or snapshot (its name or id)")
@click.option("--since", callback=_time_option, help="events at or after: 1h (back from now), or an RFC 3339 time")
@click.option("--until", callback=_time_option, help="events before: 30m (back from now), or an RFC 3339 time")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True,
              help="the newest this many events (0: every matching one)")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="json: the events as the API gives them, in a list (one object a line with --follow)")
@click.option("--follow", "-f", is_flag=True, help="then print events as they are decided, until interrupted")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="seconds between polls when following")
def audit_events(api, limit, output, follow, interval, **filters) -> None:
    """The audit trail through robin's API, oldest first: who changed what, and how it ended. Admins and auditors
    see every event, a member token its project's."""
    from robin.audit import events_client

    if follow and filters["until"]:
        raise click.UsageError("--follow prints events as they come: it takes no --until")
    filters = {name: value for name, value in filters.items() if value is not None}
    client = api.client()
    try:
        with refusals():
            shown = events_client.newest(client, filters, limit)
            _print_events(shown, output, follow, header=True)
            if follow:
                follower = events_client.Follower(client, filters, shown)
                while True:
                    time.sleep(interval)
                    _print_events(follower.poll(), output, follow, header=False)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()


def _print_events(events: list[dict], output: str, follow: bool, header: bool) -> None:
    from robin.audit.events_client import table_lines

    if output == "json":
        text = "\n".join(json.dumps(event) for event in events) if follow else json.dumps(events, indent=2)
        if text:
            click.echo(text)
    else:
        for line in table_lines(events, header and bool(events)):
            click.echo(line)
    sys.stdout.flush()


# --- migrate --------------------------------------------------------------------------------------

@main.group()
def migrate() -> None:
    """Move data into robin-managed Ceph volumes."""


@migrate.command("gluster")
@click.argument("sources", nargs=-1)
@click.option("--pv", "pvs", multiple=True, help="a Kubernetes PV with a glusterfs source (repeatable)")
@click.option("--all-pvs", is_flag=True, help="every Kubernetes PV with a glusterfs source")
@click.option("--project", help="robin project of the new volumes of SOURCES (a PV's is its claim namespace's)")
@click.option("--to", "kind", type=click.Choice(["cephfs", "rbd"]), default="cephfs", show_default=True,
              help="a CephFS path, or an RBD image with a file system")
@click.option("--name", help="the new volume's name, for a single source [gluster-<volume>[-<dir>], "
                             "migrated-<pv>]")
@click.option("--pool", help="RBD pool [robin's default]")
@click.option("--fs", help="CephFS file system [robin's default]")
@click.option("--cluster", help="robin cluster [robin's default]")
@click.option("--headroom", type=click.FloatRange(0, 10), default=0.2, show_default=True,
              help="room to grow, as a fraction of what the source holds")
@click.option("--parallel", type=click.IntRange(1, 256), default=8, show_default=True, help="files copied at once")
@click.option("--checksum", is_flag=True, help="compare the content of every file of the same size, not only "
                                               "those whose mtime differs (after a verification found content "
                                               "mismatches)")
@click.option("--fs-type", type=click.Choice(["ext4", "xfs"]), default="ext4", show_default=True,
              help="file system made on a new RBD image")
@click.option("--rbd-mounter", type=click.Choice(["rbd-fuse", "krbd", "rbd-nbd"]),
              default=lambda: _section(config.MigrateSettings).rbd_mounter,
              help="how RBD images are mapped on this host [ROBIN_MIGRATE_RBD_MOUNTER, rbd-fuse]")
@click.option("--ceph-user", help="cephx user that mounts the destinations [ROBIN_CEPH_CLIENT_ID, admin]")
@click.option("--ceph-keyring", help="keyring holding its key [the keyring ROBIN_CEPH_CONF names]")
@click.option("--work-dir", help="mountpoints and daemon logs [$ROBIN_STATE_DIR/migrate]")
@click.option("--dry-run", is_flag=True, help="print the plan and check quotas; create and copy nothing")
@click.option("--cutover", is_flag=True, help="PVs: after a verified copy, rebind each claim to a new PV of "
                                              "the destination (the workload must be scaled down)")
@click.option("--storage-class", help="with --cutover: the robin StorageClass of the new claims and PVs")
@click.option("--finalize", is_flag=True, help="PVs: delete the old (retained) PVs of claims already cut over")
@click.option("--kubeconfig", help="kubeconfig file [in-cluster, then $KUBECONFIG or ~/.kube/config]")
@click.option("--gluster-port", type=click.IntRange(1, 65535), default=24007, show_default=True,
              help="PVs: glusterd's port on the Endpoints' addresses")
@click.option("--progress/--no-progress", default=None, help="progress bar on stderr [when it is a terminal]")
@click.option("--json", "as_json", is_flag=True, help="print the plan and the reports as JSON")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="also write the reports there")
def migrate_gluster(**flags) -> None:
    """Copy GlusterFS volumes (SOURCES: server[:port]:/volume[/directory]) or Kubernetes PVs into new robin
    volumes: plan (quotas checked before anything is made), copy (resumable: run it again to continue),
    verify every file, record the result in robin. Exit status 0 all verified, 1 failures, 2 plan refused.
    robin's API is ROBIN_URL with ROBIN_TOKEN (or ROBIN_TOKEN_FILE); the Gluster client is mounted read-only."""
    from robin.client import ClientConfig, RobinApiError, RobinClient
    from robin.kube.client import KubeError
    from robin.migrate.command import EXIT_REFUSED, Migration, UsageError
    from robin.migrate.errors import MigrationError

    options = _migrate_options(flags)
    try:
        client = RobinClient(ClientConfig.from_env())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    kube = _migrate_kube(options) if options.pvs or options.all_pvs else None
    try:
        status = Migration(options, client, kube).run()
    except UsageError as exc:
        raise click.UsageError(str(exc)) from exc
    except MigrationError as exc:  # raised while planning (a source that is none), before anything is made
        click.echo(f"{exc.code}: {exc.message}", err=True)
        sys.exit(EXIT_REFUSED)
    except (RobinApiError, KubeError) as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(status)


def _migrate_options(flags: dict):
    from robin.migrate import destination
    from robin.migrate.command import Options

    settings = _settings()
    if not flags["sources"] and not flags["pvs"] and not flags["all_pvs"]:
        raise click.UsageError("name what to migrate: SOURCES (server:/volume), --pv NAME or --all-pvs")
    if (flags["cutover"] or flags["finalize"]) and flags["sources"]:
        raise click.UsageError("--cutover and --finalize are for Kubernetes PVs (--pv, --all-pvs) only")
    if flags["cutover"] and not flags["storage_class"]:
        raise click.UsageError("--cutover needs --storage-class: the robin class of the new claim and PV")
    if flags["finalize"] and not flags["pvs"]:
        raise click.UsageError("--finalize needs the PVs by name (--pv)")
    if flags["project"] and (flags["pvs"] or flags["all_pvs"]):
        raise click.UsageError("a PV's volume goes into its claim's namespace's project: --project is for "
                               "GlusterFS sources only")
    if flags["name"] and len(flags["sources"]) + len(flags["pvs"]) != 1:
        raise click.UsageError("--name is for a single source")
    user = flags.pop("ceph_user") or settings.ceph_client_id
    keyring = flags.pop("ceph_keyring") or destination.default_keyring(settings.ceph_conf, user)
    progress = flags.pop("progress")
    return Options(**{**flags, "sources": tuple(flags["sources"]), "pvs": tuple(flags["pvs"]),
                      "work_dir": flags["work_dir"] or str(Path(settings.state_dir) / "migrate"),
                      "ceph_user": user, "ceph_keyring": keyring,
                      "progress": sys.stderr.isatty() if progress is None else progress})


def _migrate_kube(options):
    from kubernetes.config import ConfigException

    from robin.kube.client import Kube, load_api_client

    try:
        return Kube(load_api_client(options.kubeconfig or "", pool_size=4), qps=20, burst=40)
    except (ConfigException, OSError) as exc:
        raise click.ClickException(f"cannot load the Kubernetes configuration: {exc}") from exc


# --- provisioner --------------------------------------------------------------------------------

@main.command()
@click.option("--kubeconfig", help="kubeconfig file [ROBIN_PROVISIONER_KUBECONFIG; default: in-cluster, "
                                   "then $KUBECONFIG or ~/.kube/config]")
@click.option("--workers", type=int, help="claims handled at once [ROBIN_PROVISIONER_WORKERS, 8]")
@click.option("--qps", type=float, help="Kubernetes API requests per second [ROBIN_PROVISIONER_QPS, 50]")
@click.option("--burst", type=int, help="Kubernetes API request burst [ROBIN_PROVISIONER_BURST, 100]")
@click.option("--metrics-address", help="host:port of /metrics, '' for none [ROBIN_PROVISIONER_METRICS_ADDRESS, "
                                        "127.0.0.1:9808]")
@click.option("--leader-elect/--no-leader-elect", default=None,
              help="take a Lease before acting, so several replicas can run [on]")
@click.option("--lease-namespace", help="namespace of the Lease [ROBIN_PROVISIONER_LEASE_NAMESPACE, $POD_NAMESPACE]")
@click.option("--identity", help="this replica's name in the Lease [hostname + random]")
def provisioner(**flags) -> None:
    """Turn PersistentVolumeClaims of robin's StorageClasses into robin volumes and bound PVs (runs until
    SIGTERM/SIGINT). robin's API is ROBIN_URL with ROBIN_TOKEN (or ROBIN_TOKEN_FILE), an admin token so that
    it can create projects for namespaces."""
    import signal

    from robin.client import ClientConfig
    from robin.provisioner.runner import Provisioner

    settings = _section(config.ProvisionerSettings, **flags)
    try:
        client_config = ClientConfig.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    runner = Provisioner(settings, client_config)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: runner.stop())
    runner.run()


# --- tokens -------------------------------------------------------------------------------------

@main.group()
def token() -> None:
    """API tokens (admins): through robin's API, or with --direct on a robin host (the first admin token)."""


TOKEN_DIRECT_OPTION = click.option(
    "--direct", is_flag=True,
    help="use this host's database (ROBIN_DATABASE_URL) instead of robin's API: for the first admin token, which "
         "only a robin host can make")
TOKEN_COLUMNS = (
    Column("id"),
    Column("name"),
    Column("role"),
    Column("project"),
    Column("prefix"),
    Column("created_at", "CREATED", "time"),
    Column("expires_at", "EXPIRES", "time"),
    Column("revoked_at", "REVOKED", "time"),
)


def _token_id(item: dict) -> str:
    return str(item["id"])


def _token_client(api):
    """The API's client, or how to do without one: only a robin host can make the first admin token."""
    try:
        return api.client()
    except click.ClickException as exc:
        raise click.ClickException(f"{exc.message} (on a robin host with no admin token yet: --direct)") from exc


@contextlib.contextmanager
def _direct_refusals():
    """robin's refusals in --direct mode as through the API: `code: message` on stderr, exit status 1."""
    from robin.errors import RobinError

    try:
        with _app_context():
            yield
    except RobinError as exc:
        click.echo(f"{exc.code}: {exc.message}", err=True)
        sys.exit(1)


def _as_answered(token: dict) -> dict:
    """A token read directly, as the API answers it (times in RFC 3339)."""
    from robin.auth.schemas import TokenCreatedSchema

    return TokenCreatedSchema().dump(token)


@token.command("create")
@click.option("--admin", "role", flag_value="admin", help="everything")
@click.option("--auditor", "role", flag_value="auditor", help="read-only, every project")
@click.option("--role", "role", type=click.Choice(["admin", "member", "auditor", "metrics", "node"]),
              help="metrics: /metrics only, for a Prometheus scrape; node: a CSI node's CephFS credentials only")
@click.option("--project", help="the project of a member token")
@click.option("--name", default="", help="a label to recognise the token by [its role]")
@click.option("--expires-in", help="refused after this long: 30d, 12h, 90m, 2w [never]")
@click.option("--secret-file", type=click.Path(dir_okay=False),
              help="register the token in this file (robin_ and 32+ characters, e.g. a mounted Secret) instead of "
                   "making one, in this host's database (as --direct); nothing is printed, and a rerun changes "
                   "nothing")
@click.option("-o", "--output", type=click.Choice(["secret", "json", "yaml"]), default="secret", show_default=True,
              help="secret: the token alone; json and yaml: the token's fields with it, as the API answers")
@TOKEN_DIRECT_OPTION
@client_options
def token_create(api, role, project, name, expires_in, secret_file, output, direct) -> None:
    """Create a token and print it, once: only its hash is kept."""
    if role is None:
        role = "member" if project else None
    if role is None:
        raise click.UsageError("say which token: --admin, --auditor, --role metrics, --role node, or --project P "
                               "[--role member]")
    lifetime = _lifetime(expires_in)
    if secret_file is not None:
        _register_token(secret_file, role, project, name, lifetime)
        return
    if direct:
        created = _create_token_direct(role, project, name, lifetime)
    else:
        body = {"role": role, "project": project, "name": name or None, "expires_in": expires_in}
        client = _token_client(api)
        with refusals():
            created = client.request("POST", "/api/v2/tokens", json={k: v for k, v in body.items() if v is not None})
    if output == "secret":
        click.echo(created["secret"])
    else:
        show(output, created, TOKEN_COLUMNS)


def _lifetime(value: str | None):
    """--expires-in checked here, before anything is asked of the API or the database."""
    from robin.auth.service import parse_lifetime
    from robin.errors import InvalidInput

    if value is None:
        return None
    try:
        return parse_lifetime(value)
    except InvalidInput as exc:
        raise click.BadParameter(exc.message, param_hint="'--expires-in'") from exc


def _create_token_direct(role: str, project: str | None, name: str, lifetime) -> dict:
    from robin.auth import service
    from robin.auth.models import Role

    with _direct_refusals():
        secret, made = service.create_token(Role(role), project=project, name=name, expires_in=lifetime)
        return _as_answered({**service.token_detail(made.id), "secret": secret})


def _register_token(path: str, role: str, project: str | None, name: str, lifetime) -> None:
    from robin.auth import service
    from robin.auth.models import Role

    with _direct_refusals():
        made = service.register_token(_read_secret(path), Role(role), project=project, name=name,
                                      expires_in=lifetime)
    click.echo("registered" if made else "registered already: nothing changed", err=True)


def _read_secret(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise click.ClickException(f"cannot read the token in {path}: {exc.strerror}") from exc


@token.command("list")
@output_option
@TOKEN_DIRECT_OPTION
@client_options
def token_list(api, output, direct: bool) -> None:
    """Every token: id, name, role, project, prefix, created, expires, revoked. Secrets are not kept, so never shown
    (-o name: the ids)."""
    if direct:
        from robin.auth import service

        with _direct_refusals():
            tokens = [_as_answered(row) for row in service.list_tokens()]
    else:
        client = _token_client(api)
        with refusals():
            tokens = all_pages(lambda cursor: client.request(
                "GET", "/api/v2/tokens", params={"limit": 1000} | ({"cursor": cursor} if cursor else {})))
    show(output, tokens, TOKEN_COLUMNS, name=_token_id)


@token.command("show")
@click.argument("token_id", type=int)
@output_option
@TOKEN_DIRECT_OPTION
@client_options
def token_show(api, token_id: int, output, direct: bool) -> None:
    """Token TOKEN_ID (as `robin token list` and audit events name it: token:<id>:<name>)."""
    if direct:
        from robin.auth import service

        with _direct_refusals():
            found = _as_answered(service.token_detail(token_id))
    else:
        client = _token_client(api)
        with refusals():
            found = client.request("GET", f"/api/v2/tokens/{token_id}")
    show(output, found, TOKEN_COLUMNS, name=_token_id)


@token.command("revoke")
@click.argument("token_id", type=int)
@TOKEN_DIRECT_OPTION
@client_options
def token_revoke(api, token_id: int, direct: bool) -> None:
    """Revoke a token by its id (as shown in audit events: token:<id>:<name>); returns once no robin process takes it
    any more (about 2 seconds)."""
    if direct:
        from robin.auth import service

        with _direct_refusals():
            service.revoke_everywhere(token_id)
        return
    client = _token_client(api)
    with refusals():
        client.request("DELETE", f"/api/v2/tokens/{token_id}")


# --- secrets at rest ------------------------------------------------------------------------------

@main.group("secrets")
def secrets_group() -> None:
    """The keys that encrypt secrets at rest (registered clusters' cephx keys)."""


@secrets_group.command("new-key")
def secrets_new_key() -> None:
    """Print a new key for ROBIN_SECRET_KEY (or a line of ROBIN_SECRET_KEY_FILE)."""
    from cryptography.fernet import Fernet

    click.echo(Fernet.generate_key().decode())


@secrets_group.command("rotate")
def secrets_rotate() -> None:
    """Re-encrypt every stored secret with the first key of ROBIN_SECRET_KEY (or ROBIN_SECRET_KEY_FILE). Put the
    new key first and keep the old ones after it while this runs; then the old ones can be dropped."""
    from robin.clusters import service
    from robin.errors import RobinError

    try:
        with _app_context():
            rotated = service.rotate_keys()
    except RobinError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"{rotated} cluster key(s) re-encrypted with the first key")


# --- resources, through robin's API ---------------------------------------------------------------

def _add_client_commands() -> None:
    from robin.cli import clusters, completion, contexts_command, resources

    for group in (*resources.COMMANDS, clusters.cluster, contexts_command.config_group, completion.completion):
        main.add_command(group)


_add_client_commands()

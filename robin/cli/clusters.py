"""`robin cluster list|show|register|unregister`: the Ceph clusters robin manages volumes on, through its API
(listing: any token; registering and unregistering: admins)."""
from __future__ import annotations

import click

from robin.cli.frame import Column, client_options, output_option, refusals, show

CLUSTER_COLUMNS = (
    Column("name"),
    Column("is_default", "DEFAULT"),
    Column("up"),
    Column("health"),
    Column("mon_host", "MON HOST", wide=True),
    Column("conf_path", "CONF", wide=True),
    Column("client_id", "CLIENT", wide=True),
    Column("created_at", "CREATED", "time"),
)
# What `show` adds: what robin found when it connected just now.
DETAIL_COLUMNS = (
    *CLUSTER_COLUMNS,
    Column("reachable"),
    Column("fsid"),
    Column("monitors"),
    Column("pools"),
    Column("filesystems"),
    Column("error"),
)


@click.group()
def cluster() -> None:
    """The Ceph clusters robin manages volumes on."""


@cluster.command("list")
@client_options
@output_option
def cluster_list(api, output) -> None:
    """Every registered cluster, with whether it answers."""
    with refusals():
        show(output, api.client().list_clusters(), CLUSTER_COLUMNS)


@cluster.command("show")
@click.argument("name")
@client_options
@output_option
def cluster_show(api, name, output) -> None:
    """Cluster NAME, with its fsid, monitors, pools and file systems as robin sees them now."""
    with refusals():
        show(output, api.client().get_cluster(name), DETAIL_COLUMNS)


@cluster.command("register")
@click.argument("name")
@click.option("--conf-path", help="a ceph.conf on robin's hosts (absolute)")
@click.option("--keyring-path", help="the keyring on robin's hosts (absolute) [the one the conf names]")
@click.option("--mon-host", help="monitor addresses, as ceph.conf's mon_host (instead of --conf-path)")
@click.option("--key-file", type=click.File(), help="a file holding the client's cephx key (with --mon-host); "
                                                    "robin stores it encrypted and never returns it")
@click.option("--client-id", help="the cephx user [admin]")
@client_options
@output_option
def cluster_register(api, name, conf_path, keyring_path, mon_host, key_file, client_id, output) -> None:
    """Register cluster NAME: by a ceph.conf on robin's hosts, or by its monitors and a cephx key."""
    if not conf_path and not (mon_host and key_file):
        raise click.UsageError("give --conf-path, or --mon-host and --key-file")
    body = {"name": name, "conf_path": conf_path, "keyring_path": keyring_path, "mon_host": mon_host,
            "client_id": client_id, "key": key_file.read().strip() if key_file else None}
    with refusals():
        show(output, api.client().register_cluster({k: v for k, v in body.items() if v is not None}),
             CLUSTER_COLUMNS)


@cluster.command("unregister")
@click.argument("name")
@client_options
def cluster_unregister(api, name) -> None:
    """Forget cluster NAME (refused while robin has volumes there, and for the default cluster)."""
    with refusals():
        api.client().unregister_cluster(name)

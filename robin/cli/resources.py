"""`robin project|volume|snapshot|clone ...`: a project's resources through robin's API, as `rbd`, `ceph fs
subvolume` and `kubectl get -o` have people expect. Every command is one or a few API calls, so what a token may do
is what the API lets it: a member's token acts on its own project only."""
from __future__ import annotations

import click

from robin.cli.frame import (
    SIZE_TYPE,
    Column,
    all_pages,
    client_options,
    output_option,
    refusals,
    show,
    waiting,
    with_defaults,
)

KINDS = ("rbd", "cephfs")

PROJECT_COLUMNS = (
    Column("name"),
    Column("quota.max_bytes", "MAX SIZE", "size"),
    Column("quota.max_volumes", "MAX VOLUMES"),
    Column("quota.max_snapshots", "MAX SNAPSHOTS"),
    Column("created_at", "CREATED", "time"),
)
VOLUME_COLUMNS = (
    Column("name"),
    Column("project"),
    Column("kind"),  # the listing across projects names it; a project's listing of one kind does not
    Column("provisioned_bytes", "SIZE", "size"),
    Column("state"),
    Column("used_bytes", "USED", "size", wide=True),
    Column("cluster", wide=True),
    Column("pool", wide=True),
    Column("fs", wide=True),
    Column("path", wide=True),
    Column("parent", wide=True),
    Column("purge_after", "PURGE AFTER", "time", wide=True),
    Column("id", wide=True),  # what names one volume of the trash, where several may share a name
    Column("created_at", "CREATED", "time"),
)
SNAPSHOT_COLUMNS = (
    Column("name"),
    Column("volume"),
    Column("project"),
    Column("volume_kind", "KIND"),
    Column("size_bytes", "SIZE", "size"),
    Column("state"),
    Column("id", wide=True),
    Column("created_at", "CREATED", "time"),
)


def volume_columns(kind: str) -> tuple[Column, ...]:
    """The columns of a volume of `kind`, which the answers of one kind's endpoints do not name."""
    return with_defaults(VOLUME_COLUMNS, kind=kind)


def snapshot_columns(kind: str, project: str) -> tuple[Column, ...]:
    """The columns of a snapshot of one volume, whose answers name neither its kind nor its project."""
    return with_defaults(SNAPSHOT_COLUMNS, volume_kind=kind, project=project)


def project_option(command):
    return click.option("-p", "--project", help="the project [the context's project]")(command)


def kind_option(command):
    return click.option("--kind", type=click.Choice(KINDS), default="rbd", show_default=True,
                        help="rbd: an RBD image; cephfs: a CephFS path")(command)


def _project(api, project: str | None) -> str:
    chosen = project or api.default_project()
    if not chosen:
        raise click.UsageError("which project? Give --project (or a project in the context)")
    return chosen


# --- projects -----------------------------------------------------------------------------------

@click.group()
def project() -> None:
    """Projects and their quotas (creating, changing and deleting them takes an admin token)."""


@project.command("create")
@click.argument("name")
@click.option("--max-bytes", type=SIZE_TYPE, required=True, help="bytes its volumes may hold, e.g. 1Ti")
@click.option("--max-volumes", type=click.IntRange(min=0), required=True, help="volumes it may have")
@click.option("--max-snapshots", type=click.IntRange(min=0), required=True, help="snapshots it may have")
@client_options
@output_option
def project_create(api, name, max_bytes, max_volumes, max_snapshots, output) -> None:
    """Create project NAME with its quota."""
    quota = {"max_bytes": max_bytes, "max_volumes": max_volumes, "max_snapshots": max_snapshots}
    with refusals():
        show(output, api.client().create_project(name, quota), PROJECT_COLUMNS)


@project.command("list")
@client_options
@output_option
def project_list(api, output) -> None:
    """The projects the token sees (a member's: its own)."""
    client = api.client()
    with refusals():
        show(output, all_pages(lambda cursor: client.list_projects(cursor=cursor)), PROJECT_COLUMNS)


@project.command("show")
@click.argument("name")
@client_options
@output_option
def project_show(api, name, output) -> None:
    """Project NAME and its quota."""
    with refusals():
        show(output, api.client().get_project(name), PROJECT_COLUMNS)


@project.command("set-quota")
@click.argument("name")
@click.option("--max-bytes", type=SIZE_TYPE, help="bytes its volumes may hold, e.g. 2Ti")
@click.option("--max-volumes", type=click.IntRange(min=0), help="volumes it may have")
@click.option("--max-snapshots", type=click.IntRange(min=0), help="snapshots it may have")
@client_options
@output_option
def project_set_quota(api, name, output, **quota) -> None:
    """Change the quota of project NAME: the limits given; the others stay. A limit below what the project holds
    already is refused."""
    quota = {key: value for key, value in quota.items() if value is not None}
    if not quota:
        raise click.UsageError("give at least one of --max-bytes, --max-volumes, --max-snapshots")
    with refusals():
        show(output, api.client().update_project_quota(name, quota), PROJECT_COLUMNS)


@project.command("delete")
@click.argument("name")
@client_options
def project_delete(api, name) -> None:
    """Delete project NAME (refused while it has volumes)."""
    with refusals():
        api.client().delete_project(name)


# --- volumes ------------------------------------------------------------------------------------

@click.group()
def volume() -> None:
    """A project's volumes: RBD images (--kind rbd, the default) and CephFS paths (--kind cephfs)."""


@volume.command("create")
@click.argument("name")
@click.option("--size", type=SIZE_TYPE, required=True, help="10Gi, 500M, 2T (an RBD image's size, a CephFS path's "
                                                            "quota)")
@kind_option
@project_option
@click.option("--cluster", help="robin cluster [the default one]")
@click.option("--pool", help="RBD pool [robin's default]")
@click.option("--fs", help="CephFS file system [robin's default]")
@click.option("--feature", "features", multiple=True, help="RBD image feature (repeatable) [robin's defaults]")
@click.option("--metadata", "metadata", multiple=True, metavar="KEY=VALUE", help="RBD image metadata (repeatable)")
@client_options
@output_option
def volume_create(api, name, size, kind, project, cluster, pool, fs, features, metadata, output) -> None:
    """Create volume NAME; its size counts against the project's quota."""
    fields = {"cluster": cluster} if cluster else {}
    if kind == "rbd":
        fields |= _rbd_fields(pool, fs, features, metadata)
    elif pool or features or metadata:
        raise click.UsageError("--pool, --feature and --metadata are for RBD images (--kind rbd)")
    elif fs:
        fields["fs"] = fs
    project = _project(api, project)
    with refusals():
        show(output, api.client().create_volume(kind, project, name, size, **fields), volume_columns(kind))


def _rbd_fields(pool, fs, features, metadata) -> dict:
    if fs:
        raise click.UsageError("--fs is for CephFS paths (--kind cephfs)")
    fields = {"pool": pool} if pool else {}
    if features:
        fields["features"] = list(features)
    if metadata:
        if not all("=" in pair for pair in metadata):
            raise click.BadParameter("KEY=VALUE pairs", param_hint="--metadata")
        fields["metadata"] = dict(pair.split("=", 1) for pair in metadata)
    return fields


@volume.command("list")
@project_option
@click.option("--kind", type=click.Choice(KINDS), help="only this kind [both]")
@click.option("--trashed", is_flag=True, help="the volumes in the trash instead (with --kind and a project)")
@client_options
@output_option
def volume_list(api, project, kind, trashed, output) -> None:
    """The volumes of a project, or of every project the token sees when none is given or in the context."""
    project = project or api.default_project()
    if trashed and not (kind and project):
        raise click.UsageError("--trashed lists one project's volumes of one kind: give --project and --kind")
    client = api.client()
    with refusals():
        if kind and project:
            items = all_pages(lambda cursor: client.list_volumes(kind, project, cursor=cursor, trashed=trashed))
            show(output, items, volume_columns(kind))
        else:
            items = all_pages(lambda cursor: client.list_all_volumes(cursor=cursor, project=project))
            show(output, [item for item in items if kind in (None, item["kind"])], VOLUME_COLUMNS)


@volume.command("show")
@click.argument("name")
@kind_option
@project_option
@click.option("--with-used", is_flag=True, help="measure the bytes it occupies in Ceph now")
@client_options
@output_option
def volume_show(api, name, kind, project, with_used, output) -> None:
    """Volume NAME."""
    project = _project(api, project)
    with refusals():
        show(output, api.client().get_volume(kind, project, name, with_used=with_used), volume_columns(kind))


@volume.command("resize")
@click.argument("name")
@click.option("--size", type=SIZE_TYPE, required=True, help="the new size, e.g. 20Gi")
@kind_option
@project_option
@click.option("--allow-shrink", is_flag=True, help="let an RBD image shrink (what lies beyond the new end is lost)")
@client_options
@output_option
def volume_resize(api, name, size, kind, project, allow_shrink, output) -> None:
    """Grow (or shrink) volume NAME; growing checks the project's quota."""
    project = _project(api, project)
    with refusals():
        show(output, api.client().resize_volume(kind, project, name, size, allow_shrink=allow_shrink),
             volume_columns(kind))


@volume.command("delete")
@click.argument("name")
@kind_option
@project_option
@click.option("--with-snapshots", is_flag=True, help="delete its snapshots too (refused otherwise while it has any)")
@click.option("--purge", is_flag=True, help="remove it at once instead of moving it to the trash (admins)")
@client_options
def volume_delete(api, name, kind, project, with_snapshots, purge) -> None:
    """Move volume NAME to the trash (`robin volume restore` brings it back until its purge time)."""
    project = _project(api, project)
    with refusals():
        api.client().delete_volume(kind, project, name, with_snapshots=with_snapshots, purge=purge)


@volume.command("restore")
@click.argument("name")
@kind_option
@project_option
@client_options
@output_option
def volume_restore(api, name, kind, project, output) -> None:
    """Bring volume NAME back from the trash; its size counts against the quota again."""
    project = _project(api, project)
    with refusals():
        show(output, api.client().restore_volume(kind, project, name), volume_columns(kind))


@volume.command("purge")
@click.argument("name")
@click.option("--id", "volume_id", required=True,
              help="the trashed volume's id (`robin volume list --trashed -o wide`): the trash may hold several of "
                   "a name")
@kind_option
@project_option
@client_options
def volume_purge(api, name, volume_id, kind, project) -> None:
    """Purge volume NAME from the trash now, before its purge time (admins); it cannot be restored afterwards."""
    project = _project(api, project)
    with refusals():
        api.client().purge_trashed_volume(kind, project, name, volume_id)


@volume.command("flatten")
@click.argument("name")
@project_option
@client_options
@output_option
def volume_flatten(api, name, project, output) -> None:
    """Copy the parent's blocks into clone NAME (an RBD image) so that it stands alone; waits until done."""
    project = _project(api, project)
    client = api.client()
    with refusals():
        show(output, waiting(f"flattening {name}", True, lambda: client.flatten_image(project, name)),
             volume_columns("rbd"))


# --- snapshots ----------------------------------------------------------------------------------

@click.group()
def snapshot() -> None:
    """Snapshots of a project's volumes (each counts against its snapshot quota)."""


@snapshot.command("create")
@click.argument("volume_name", metavar="VOLUME")
@click.argument("name")
@kind_option
@project_option
@client_options
@output_option
def snapshot_create(api, volume_name, name, kind, project, output) -> None:
    """Snapshot VOLUME as NAME."""
    project = _project(api, project)
    with refusals():
        show(output, api.client().create_snapshot(kind, project, volume_name, name), snapshot_columns(kind, project))


@snapshot.command("list")
@click.argument("volume_name", metavar="[VOLUME]", required=False)
@kind_option
@project_option
@client_options
@output_option
def snapshot_list(api, volume_name, kind, project, output) -> None:
    """The snapshots of VOLUME; without it, of every volume of the project (or of every project the token sees)."""
    project = project or api.default_project()
    client = api.client()
    with refusals():
        if volume_name:
            project = _project(api, project)
            items = all_pages(lambda cursor: client.list_snapshots(kind, project, volume_name, cursor=cursor))
            show(output, items, snapshot_columns(kind, project))
        else:
            show(output, all_pages(lambda cursor: client.list_all_snapshots(project=project, cursor=cursor)),
                 SNAPSHOT_COLUMNS)


@snapshot.command("delete")
@click.argument("volume_name", metavar="VOLUME")
@click.argument("name")
@kind_option
@project_option
@client_options
def snapshot_delete(api, volume_name, name, kind, project) -> None:
    """Delete snapshot NAME of VOLUME (refused while a clone depends on it)."""
    project = _project(api, project)
    with refusals():
        api.client().delete_snapshot(kind, project, volume_name, name)


@snapshot.command("rollback")
@click.argument("volume_name", metavar="VOLUME")
@click.argument("name")
@kind_option
@project_option
@client_options
@output_option
def snapshot_rollback(api, volume_name, name, kind, project, output) -> None:
    """Put VOLUME back to snapshot NAME's content (what was written since is lost; stop its users first)."""
    project = _project(api, project)
    with refusals():
        show(output, api.client().rollback_snapshot(kind, project, volume_name, name),
             snapshot_columns(kind, project))


# --- clones -------------------------------------------------------------------------------------

@click.group()
def clone() -> None:
    """Copy-on-write clones of RBD images."""


@clone.command("create")
@click.argument("name")
@click.option("--from", "source", required=True, metavar="IMAGE[@SNAPSHOT]",
              help="the image (its current state) or one of its snapshots, in the same project")
@click.option("--size", type=SIZE_TYPE, help="larger than the source [the source's size]")
@project_option
@click.option("--pool", help="RBD pool [the source's]")
@client_options
@output_option
def clone_create(api, name, source, size, project, pool, output) -> None:
    """Create RBD image NAME as a clone; it shares the source's blocks until `robin volume flatten`."""
    image, _, snap = source.partition("@")
    if not image or (_ and not snap):
        raise click.BadParameter("IMAGE or IMAGE@SNAPSHOT", param_hint="--from")
    fields = {key: value for key, value in (("size_bytes", size), ("pool", pool)) if value is not None}
    project = _project(api, project)
    with refusals():
        show(output, api.client().clone_image(project, name, {"image": image} | ({"snapshot": snap} if snap else {}),
                                              **fields), volume_columns("rbd"))


COMMANDS = (project, volume, snapshot, clone)

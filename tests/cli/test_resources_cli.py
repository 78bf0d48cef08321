"""`robin project|volume|snapshot|clone` as an admin's (or a member's) machine runs them: subprocesses with no
database and no Ceph, calling the session's real `robin serve`. What they print is parsed back in every format and
compared with what the API answers; what they change is checked in Ceph."""
from __future__ import annotations

import csv
import io
import json
import sys

import pytest
import rbd
import yaml

from tests.cli.conftest import ok, on_terminal, refused, table, usage_error
from tests.cli.test_audit_events_cli import client_env, robin
from tests.conftest import cephfs_exists, make_token, unique

GiB = 2**30


def every_format(cli, *args: str) -> dict:
    """The listing `args` in every output format, each parsed back."""
    return {"json": json.loads(ok(cli(*args, "-o", "json"))),
            "yaml": yaml.safe_load(ok(cli(*args, "-o", "yaml"))),
            "csv": list(csv.DictReader(io.StringIO(ok(cli(*args, "-o", "csv"))))),
            "name": ok(cli(*args, "-o", "name")).splitlines(),
            "table": table(ok(cli(*args))),
            "wide": table(ok(cli(*args, "-o", "wide")))}


# --- projects -----------------------------------------------------------------------------------

def test_a_project_created_listed_shown_requoted_and_deleted(cli, api):
    name = unique("p")
    made = json.loads(ok(cli("project", "create", name, "--max-bytes", "10Gi", "--max-volumes", "5",
                             "--max-snapshots", "7", "-o", "json")))
    assert made == api("GET", f"/api/v2/projects/{name}")
    assert made["quota"] == {"max_bytes": 10 * GiB, "max_volumes": 5, "max_snapshots": 7}

    listed = every_format(cli, "project", "list")
    everyone = [project for project in api("GET", "/api/v2/projects", params={"limit": 1000})["items"]]
    assert listed["json"] == listed["yaml"] == everyone  # the session's projects are fewer than a page
    assert listed["name"] == [project["name"] for project in everyone]
    row = next(row for row in listed["csv"] if row["name"] == name)
    assert (row["quota.max_bytes"], row["quota.max_volumes"], row["created_at"]) == \
           (str(10 * GiB), "5", made["created_at"])
    shown = next(row for row in listed["table"] if row["NAME"] == name)
    assert (shown["MAX SIZE"], shown["MAX VOLUMES"], shown["MAX SNAPSHOTS"]) == ("10.0 GiB", "5", "7")

    assert yaml.safe_load(ok(cli("project", "set-quota", name, "--max-bytes", "2T", "-o", "yaml")))["quota"] == \
           {"max_bytes": 2 * 10**12, "max_volumes": 5, "max_snapshots": 7}
    details = ok(cli("project", "show", name)).splitlines()
    assert details[0].split() == ["NAME:", name] and details[1].split() == ["MAX", "SIZE:", "1.8", "TiB"]
    assert ok(cli("project", "delete", name)) == ""
    refused(cli("project", "show", name), "project_not_found")
    refused(cli("project", "delete", name), "project_not_found")


# --- volumes, snapshots, clones -------------------------------------------------------------------

def test_an_rbd_image_through_its_whole_life(cli, api, new_project, rbd_ioctx, robin_url, admin_token):
    project, image, snap, copy = new_project(), unique("img"), unique("s"), unique("clone")
    at = ("--project", project)
    made = json.loads(ok(cli("volume", "create", image, "--size", "1Gi", *at, "--metadata", "team=web", "-o",
                             "json")))
    assert made == api("GET", f"/api/v2/projects/{project}/rbd-images/{image}")
    assert (made["size_bytes"], made["metadata"], made["state"]) == (GiB, {"team": "web"}, "available")
    with rbd.Image(rbd_ioctx, image, read_only=True) as opened:  # robin's images keep their names in Ceph
        assert opened.size() == GiB

    grown = json.loads(ok(cli("volume", "resize", image, "--size", "1536Mi", *at, "-o", "json")))
    assert grown["size_bytes"] == 1536 * 2**20
    assert json.loads(ok(cli("volume", "show", image, *at, "--with-used", "-o", "json")))["used_bytes"] >= 0
    assert ok(cli("volume", "show", image, *at, "-o", "name")) == f"{image}\n"
    details = dict(line.split(":", 1) for line in ok(cli("volume", "show", image, *at)).splitlines())
    assert {key: value.strip() for key, value in details.items() if key in ("KIND", "SIZE", "STATE")} == \
           {"KIND": "rbd", "SIZE": "1.5 GiB", "STATE": "available"}

    taken = json.loads(ok(cli("snapshot", "create", image, snap, *at, "-o", "json")))
    assert (taken["name"], taken["volume"], taken["size_bytes"]) == (snap, image, 1536 * 2**20)
    snapshots = every_format(cli, "snapshot", "list", image, *at)
    assert snapshots["json"] == snapshots["yaml"] == [taken] and snapshots["name"] == [snap]
    assert snapshots["table"][0]["SIZE"] == "1.5 GiB" and snapshots["wide"][0]["ID"] == taken["id"]
    across = json.loads(ok(cli("snapshot", "list", *at, "-o", "json")))
    assert [(item["volume"], item["volume_kind"], item["name"]) for item in across] == [(image, "rbd", snap)]
    assert json.loads(ok(cli("snapshot", "rollback", image, snap, *at, "-o", "json")))["name"] == snap

    clone = json.loads(ok(cli("clone", "create", copy, "--from", f"{image}@{snap}", *at, "-o", "json")))
    assert clone["parent"] == {"image": image, "snapshot": snap} and clone["size_bytes"] == 1536 * 2**20
    flattened = on_terminal([sys.executable, "-m", "robin.cli", "volume", "flatten", copy, *at, "-o", "json"],
                            client_env({"ROBIN_URL": robin_url, "ROBIN_TOKEN": admin_token}))
    assert flattened.returncode == 0 and f"flattening {copy}... done in " in flattened.stderr, flattened.stderr
    assert json.loads(flattened.stdout)["parent"] is None

    volumes = every_format(cli, "volume", "list", *at)
    assert volumes["json"] == volumes["yaml"] == api("GET", "/api/v2/volumes", params={"project": project})["items"]
    assert sorted(volumes["name"]) == sorted([image, copy])
    rows = {row["NAME"]: row for row in volumes["table"]}
    assert (rows[image]["KIND"], rows[image]["SIZE"], rows[image]["STATE"]) == ("rbd", "1.5 GiB", "available")
    assert {row["name"]: row["provisioned_bytes"] for row in volumes["csv"]} == \
           {image: str(1536 * 2**20), copy: str(1536 * 2**20)}
    assert {row["NAME"]: row["POOL"] for row in volumes["wide"]} == {image: made["pool"], copy: made["pool"]}

    refused(cli("volume", "delete", image, *at), "volume_has_snapshots")
    assert ok(cli("snapshot", "delete", image, snap, *at)) == ""
    assert ok(cli("volume", "delete", image, *at)) == ""
    trashed = json.loads(ok(cli("volume", "list", *at, "--kind", "rbd", "--trashed", "-o", "json")))
    assert [item["name"] for item in trashed] == [image] and trashed[0]["purge_after"]
    assert json.loads(ok(cli("volume", "restore", image, *at, "-o", "json")))["state"] == "available"
    assert ok(cli("volume", "delete", copy, *at)) == ""  # into the trash: purged from there by its id
    [wide] = every_format(cli, "volume", "list", *at, "--kind", "rbd", "--trashed")["wide"]
    assert (wide["NAME"], wide["ID"]) == (copy, clone["id"])
    refused(cli("volume", "purge", copy, "--id", made["id"], *at), "not_in_trash")
    assert ok(cli("volume", "purge", copy, "--id", clone["id"], *at)) == ""
    assert copy not in {entry["name"] for entry in rbd.RBD().trash_list(rbd_ioctx)}
    assert ok(cli("volume", "delete", image, *at, "--purge")) == ""
    assert json.loads(ok(cli("volume", "list", *at, "-o", "json"))) == []
    assert not {image, copy} & set(rbd.RBD().list(rbd_ioctx))


def test_a_cephfs_path_with_its_quota_and_snapshot(cli, api, new_project, fs):
    project, path, snap = new_project(), unique("dir"), unique("s")
    at = ("--project", project, "--kind", "cephfs")
    made = yaml.safe_load(ok(cli("volume", "create", path, "--size", "500M", *at, "-o", "yaml")))
    assert made == api("GET", f"/api/v2/projects/{project}/cephfs-paths/{path}")
    assert made["quota_bytes"] == 500 * 10**6 and cephfs_exists(fs, made["path"])
    assert json.loads(ok(cli("volume", "resize", path, "--size", "1G", *at, "-o", "json")))["quota_bytes"] == 10**9
    assert fs.getxattr(made["path"], "ceph.quota.max_bytes") == b"1000000000"
    ok(cli("snapshot", "create", path, snap, *at))
    assert ok(cli("snapshot", "list", path, *at, "-o", "name")) == f"{snap}\n"
    wide = table(ok(cli("volume", "list", "--project", project, "--kind", "cephfs", "-o", "wide")))
    assert [(row["NAME"], row["SIZE"], row["FS"], row["PATH"]) for row in wide] == \
           [(path, "953.7 MiB", made["fs"], made["path"])]
    assert ok(cli("volume", "delete", path, *at, "--with-snapshots", "--purge")) == ""
    refused(cli("volume", "show", path, *at), "volume_not_found")
    assert not cephfs_exists(fs, made["path"])


# --- refusals -----------------------------------------------------------------------------------

def test_sizes_the_api_refuses_leave_nothing_behind(cli, api, new_project, rbd_ioctx):
    project = new_project(max_bytes=2 * GiB)
    at = ("--project", project)
    refused(cli("volume", "create", unique("big"), "--size", "3Gi", *at), "quota_exceeded")
    refused(cli("volume", "create", unique("zero"), "--size", "0", *at), "validation_error")
    beyond = refused(cli("volume", "create", unique("huge"), "--size", "1Ei", *at), "validation_error")
    assert beyond.count("size_bytes") == 1 and "ROBIN_MAX_VOLUME_BYTES" in beyond  # said once, not repeated
    image = unique("img")
    ok(cli("volume", "create", image, "--size", "1Gi", *at))
    refused(cli("volume", "resize", image, "--size", "2.5Gi", *at), "quota_exceeded")
    assert api("GET", "/api/v2/volumes", params={"project": project})["items"][0]["provisioned_bytes"] == GiB
    assert api("GET", f"/api/v2/projects/{project}/usage")["volumes"] == 1
    ok(cli("volume", "delete", image, *at, "--purge"))


def test_unknown_names_are_refused_with_the_apis_message(cli, new_project):
    project, missing = new_project(), unique("gone")
    said = refused(cli("volume", "show", missing, "--project", project), "volume_not_found")
    assert missing in said
    refused(cli("volume", "resize", missing, "--project", project, "--kind", "cephfs", "--size", "1Gi"),
            "volume_not_found")
    refused(cli("snapshot", "create", missing, "s1", "--project", project), "volume_not_found")
    refused(cli("clone", "create", unique("c"), "--from", f"{missing}@s1", "--project", project), "volume_not_found")
    refused(cli("volume", "list", "--project", unique("nobody")), "project_not_found")
    refused(cli("project", "set-quota", unique("nobody"), "--max-volumes", "3"), "project_not_found")


@pytest.mark.parametrize("args, said", [
    (["volume", "create", "v", "--project", "p", "--size", "10Q"], "'10Q' is not a size"),
    (["volume", "create", "v", "--project", "p", "--size", "1.00001k"], "not a whole number of bytes"),
    (["volume", "create", "v", "--project", "p"], "Missing option '--size'"),
    (["volume", "create", "v", "--size", "1Gi"], "which project?"),
    (["volume", "create", "v", "-p", "p", "--size", "1Gi", "--kind", "nfs"], "Invalid value for '--kind'"),
    (["volume", "create", "v", "-p", "p", "--size", "1Gi", "--kind", "cephfs", "--pool", "x"], "for RBD images"),
    (["volume", "list", "--trashed"], "give --project and --kind"),
    (["project", "list", "-o", "xml"], "Invalid value for '-o'"),
    (["project", "set-quota", "p"], "give at least one of"),
    (["project", "create", "p", "--max-bytes", "1Gi", "--max-volumes", "-1", "--max-snapshots", "1"],
     "Invalid value for '--max-volumes'"),
    (["clone", "create", "c", "-p", "p", "--from", "img@"], "IMAGE or IMAGE@SNAPSHOT"),
    (["snapshot", "delete", "v"], "Missing argument 'NAME'"),
])
def test_usage_errors_exit_2_before_any_request(args, said, tmp_path):
    # No API configured: nothing could be asked of one.
    usage_error(robin(*args, env={"XDG_CONFIG_HOME": str(tmp_path)}), said)


def test_no_api_and_a_silent_api_exit_1(tmp_path):
    unconfigured = robin("project", "list", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert unconfigured.returncode == 1 and "ROBIN_URL" in unconfigured.stderr
    silent = robin("project", "list", env={"XDG_CONFIG_HOME": str(tmp_path), "ROBIN_URL": "http://127.0.0.1:9",
                                           "ROBIN_TOKEN": "robin_x"})
    refused(silent, "unreachable")


def test_a_member_acts_on_its_project_only(cli, app, api, new_project, rbd_ioctx):
    mine, theirs = new_project(), new_project()
    member = make_token(app, "member", mine)
    image = unique("img")
    ok(cli("volume", "create", image, "--size", "64Mi", "--project", mine, token=member))
    assert json.loads(ok(cli("project", "list", "-o", "json", token=member))) == \
           [api("GET", f"/api/v2/projects/{mine}")]
    assert ok(cli("volume", "list", "-o", "name", token=member)) == f"{image}\n"
    for args in (["volume", "create", unique("v"), "--size", "64Mi", "--project", theirs],
                 ["volume", "list", "--project", theirs],
                 ["snapshot", "list", "--project", theirs],
                 ["project", "show", theirs],
                 ["project", "set-quota", theirs, "--max-volumes", "1000"],
                 ["project", "delete", theirs],
                 ["project", "create", unique("p"), "--max-bytes", "1Gi", "--max-volumes", "1", "--max-snapshots",
                  "1"]):
        refused(cli(*args, token=member), "forbidden")
    assert api("GET", "/api/v2/volumes", params={"project": theirs})["items"] == []
    assert api("GET", f"/api/v2/projects/{theirs}")["quota"]["max_volumes"] == 100
    ok(cli("volume", "delete", image, "--project", mine, token=member))

"""The storage admin's commands through the API, as subprocesses with no database and no Ceph of their own against
the session's real `robin serve`: `robin cluster ...`, `robin audit usage` and `robin audit drift`."""
from __future__ import annotations

import csv
import io
import json
import sys

import rbd
import yaml

from tests.cli.conftest import ok, on_terminal, refused, table, usage_error
from tests.cli.test_audit_events_cli import client_env
from tests.conftest import make_token, unique

MiB = 2**20


def test_a_cluster_registered_shown_and_unregistered(cli, api, ceph_conf, app, new_project):
    name = unique("c")
    made = json.loads(ok(cli("cluster", "register", name, "--conf-path", ceph_conf, "-o", "json")))
    assert made["name"] == name and made["conf_path"] == ceph_conf and not made["is_default"]
    listed = json.loads(ok(cli("cluster", "list", "-o", "json")))
    assert listed == api("GET", "/api/v2/clusters")
    assert yaml.safe_load(ok(cli("cluster", "list", "-o", "yaml"))) == listed
    assert sorted(ok(cli("cluster", "list", "-o", "name")).split()) == sorted(item["name"] for item in listed)
    rows = {row["NAME"]: row for row in table(ok(cli("cluster", "list")))}
    assert (rows["default"]["DEFAULT"], rows[name]["DEFAULT"]) == ("True", "False")
    assert {row["name"] for row in csv.DictReader(io.StringIO(ok(cli("cluster", "list", "-o", "csv"))))} == set(rows)

    detail = json.loads(ok(cli("cluster", "show", name, "-o", "json")))
    assert detail["reachable"] and "rbd" in detail["pools"] and detail["fsid"]
    assert dict(line.split(":", 1) for line in ok(cli("cluster", "show", name)).splitlines())["FSID"].strip() == \
           detail["fsid"]

    member = make_token(app, "member", new_project())
    refused(cli("cluster", "unregister", name, token=member), "forbidden")
    refused(cli("cluster", "unregister", "default"), "cluster_is_default")
    assert ok(cli("cluster", "unregister", name)) == ""
    refused(cli("cluster", "show", name), "cluster_not_found")
    usage_error(cli("cluster", "register", unique("c"), "--mon-host", "127.0.0.1"), "--mon-host and --key-file")


def test_usage_report_through_the_api(cli, api, new_project, app, robin_url, admin_token):
    project = new_project()
    image = unique("img")
    ok(cli("volume", "create", image, "--size", "64Mi", "--project", project))
    report = json.loads(ok(cli("audit", "usage", "--json", "--volumes")))
    assert [row["provisioned_bytes"] for row in report["projects"] if row["project"] == project] == [64 * MiB]
    assert [volume["name"] for volume in report["volumes"] if volume["project"] == project] == [image]
    text = ok(cli("audit", "usage"))
    assert "PROJECTS" in text and any(line.startswith(project) and "64.0 MiB" in line for line in text.splitlines())
    rows = list(csv.DictReader(io.StringIO(ok(cli("audit", "usage", "--csv")))))
    assert [row["provisioned_bytes"] for row in rows if row["project"] == project] == [str(64 * MiB)]
    refused(cli("audit", "usage", token=make_token(app, "member", project)), "forbidden")
    measured = on_terminal([sys.executable, "-m", "robin.cli", "audit", "usage", "--refresh", "--json"],
                           client_env({"ROBIN_URL": robin_url, "ROBIN_TOKEN": admin_token}))
    assert measured.returncode == 0, measured.stderr
    assert measured.stderr.rstrip().endswith("s") and "measuring every volume... done in " in measured.stderr
    assert json.loads(measured.stdout)["refresh"]
    usage_error(cli("audit", "usage", "--json", "--csv"), "choose one of --json and --csv")
    ok(cli("volume", "delete", image, "--project", project, "--purge"))


def test_drift_and_adoption_through_the_api(cli, new_project, rbd_ioctx, api):
    """Bulk adoption takes every orphan of the cluster, other tests' too: with --yes it runs against a project with
    no room (each refused on its own, nothing changed)."""
    project, full = new_project(), new_project(max_volumes=0)
    orphan = unique("orphan")
    rbd.RBD().create(rbd_ioctx, orphan, 4 * MiB)
    try:
        report = json.loads(ok(cli("audit", "drift", "--json")))
        assert {"findings", "counts", "errors", "coverage"} <= set(report)
        assert any(f["kind"] == "orphan_image" and f["evidence"]["name"] == orphan for f in report["findings"])
        assert any(line.startswith("orphan_image") and f"name={orphan}" in line
                   for line in ok(cli("audit", "drift")).splitlines())

        dry = json.loads(ok(cli("audit", "drift", "--adopt-into", project, "--json")))
        assert dry["dry_run"] and dry["project"] == project
        mine = [step for step in dry["orphans"] if step["name"] == orphan]
        assert mine == [{"collection": "rbd-images", "name": orphan,
                         "spec": {"name": orphan, "pool": "rbd", "cluster": "default"}}]
        said = cli("audit", "drift", "--adopt-into", project)
        assert f"rbd-images    {orphan}: would adopt" in said.stdout and "dry run: nothing changed" in said.stderr

        bulk = cli("audit", "drift", "--adopt-into", full, "--yes", "--json", "--progress")
        assert bulk.returncode == 1 and "Traceback" not in bulk.stderr
        assert f"adopting into {full}" in bulk.stderr  # the progress bar, asked for though stderr is no terminal
        steps = json.loads(bulk.stdout)["orphans"]
        assert [step["code"] for step in steps if step["name"] == orphan] == ["quota_exceeded"]
        assert not any(step.get("adopted") for step in steps)
        assert api("GET", "/api/v2/volumes", params={"project": full})["items"] == []
        usage_error(cli("audit", "drift", "--yes"), "it needs --adopt-into PROJECT")
    finally:
        rbd.RBD().remove(rbd_ioctx, orphan)

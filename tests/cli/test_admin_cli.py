"""The storage admin's commands through the API, as subprocesses with no database and no Ceph of their own against
the session's real `robin serve`: `robin cluster ...`."""
from __future__ import annotations

import csv
import io
import json

import yaml

from tests.cli.conftest import ok, refused, table, usage_error
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

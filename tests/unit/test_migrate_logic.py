"""The migration tool's pure parts: source syntax, destination names and sizes, the progress line, fault points."""
from __future__ import annotations

import pytest

from robin import faults
from robin.client import VolumeRef
from robin.migrate import plan
from robin.migrate.gluster import GlusterSource, SourceError, client_argv
from robin.migrate.progress import human_duration, render
from robin.migrate.tree import Totals

GiB = 2**30


@pytest.mark.parametrize("spec, servers, port, volume, subdir", [
    ("gluster-1:/data", ("gluster-1",), 24007, "data", ""),
    ("10.0.0.5,10.0.0.6:/data/app/logs", ("10.0.0.5", "10.0.0.6"), 24007, "data", "app/logs"),
    ("127.0.0.1:24100:/vol_1/", ("127.0.0.1",), 24100, "vol_1", ""),
    ("host.example:/v//a///b", ("host.example",), 24007, "v", "a/b"),
])
def test_gluster_source_syntax(spec, servers, port, volume, subdir):
    source = GlusterSource.parse(spec)
    assert (source.servers, source.port, source.volume, source.subdir) == (servers, port, volume, subdir)
    assert GlusterSource.parse(str(source)) == source


@pytest.mark.parametrize("spelling", ["gluster-1:/data/app", "gluster-1:24007:/data/app", "gluster-1://data/app/",
                                      "GLUSTER-1:24007:/data//app//", "gluster-1,gluster-1:/data/app"])
def test_every_spelling_of_a_source_is_written_one_way(spelling):
    assert str(GlusterSource.parse(spelling)) == "gluster-1:/data/app"


def test_a_port_other_than_glusterds_is_kept_in_the_spelling():
    assert str(GlusterSource.parse("[::1]:24999://vol/")) == "[::1]:24999:/vol"
    assert GlusterSource.parse("[::1]:/vol").servers == ("[::1]",)


@pytest.mark.parametrize("spec", ["data", "host:data", ":/data", "host:/", "host:/data/../etc", "a b:/data",
                                  "host:/vol name", "host:0:/vol", "host:65536:/vol", "host:/vol/a\tb"])
def test_gluster_source_refuses_what_is_not_one(spec):
    with pytest.raises(SourceError) as caught:
        GlusterSource.parse(spec)
    assert caught.value.code == "invalid_source"


def test_client_is_read_only_in_the_foreground_with_every_server():
    argv = client_argv(GlusterSource(("a", "b"), "vol", "", 24100), "/mnt/x", "/tmp/log")
    assert argv[:3] == ["glusterfs", "-N", "--read-only"]
    # The port after every server: the client gives it to the servers named before it, 24007 to any after.
    assert argv[-4:] == ["--volfile-server=a", "--volfile-server=b", "--volfile-server-port=24100", "/mnt/x"]


def test_destination_names_fit_robins_rule():
    assert plan.destination_name(GlusterSource(("h",), "data")) == "gluster-data"
    assert plan.destination_name(GlusterSource(("h",), "data", "app/ünï code")) == "gluster-data-app-n-code"
    long = plan.destination_name(GlusterSource(("h",), "v", "d" * 300))
    assert len(long) == 128 and long != plan.destination_name(GlusterSource(("h",), "v", "d" * 301))


def test_cephfs_size_counts_holes_rbd_size_counts_blocks():
    sparse = Totals(files=1, directories=1, file_bytes=10 * GiB, allocated_bytes=2**20)
    assert plan.size_for("cephfs", sparse, headroom=0.2) == 12 * GiB
    assert plan.size_for("rbd", sparse, headroom=0.2) == GiB
    dense = Totals(files=1000, directories=10, file_bytes=5 * GiB, allocated_bytes=5 * GiB)
    assert plan.size_for("rbd", dense, headroom=0) == 6 * GiB  # ext4's own overhead on top of the data
    assert plan.size_for("cephfs", dense, headroom=0) == 5 * GiB


def test_capacity_is_a_floor_and_sizes_are_whole_gib():
    assert plan.size_for("cephfs", Totals(), headroom=0.2) == GiB
    assert plan.size_for("cephfs", Totals(file_bytes=GiB), headroom=0.2, capacity=8 * GiB) == 8 * GiB
    assert plan.size_for("cephfs", Totals(file_bytes=3 * GiB + 1), headroom=0) == 4 * GiB


def test_a_source_that_could_not_be_read_has_no_size_in_the_plan():
    unread = plan.PlanItem("h:/gone", GlusterSource(("h",), "gone"), VolumeRef("cephfs", "p", "gluster-gone"),
                           Totals(), None)
    unread.refuse("source_unreachable", "cannot mount h:/gone")
    empty = plan.PlanItem("h:/empty", GlusterSource(("h",), "empty"), VolumeRef("cephfs", "p", "gluster-empty"),
                          Totals(), plan.size_for("cephfs", Totals(), headroom=0.2))
    header, unread_row, empty_row = plan.table([unread, empty]).splitlines()
    assert unread_row.split()[2:5] == ["-", "-", "-"]  # SIZE, FILES, DATA
    assert empty_row.split()[2:7] == ["1.00", "GiB", "0", "0.00", "GiB"]  # read, and empty: the smallest volume
    assert unread.as_dict()["size_bytes"] is None and unread.as_dict()["files"] is None
    assert empty.as_dict()["size_bytes"] == GiB and empty.as_dict()["files"] == 0


def test_progress_line():
    line = render("copy data", 512 * 2**20, GiB, 10, 40, rate=64 * 2**20)
    assert line.startswith("copy data [############............]  50%")
    assert "512.0 MiB/1.0 GiB" in line and "10/40 files" in line and "64.0 MiB/s" in line and "ETA 00:08" in line
    assert "ETA --:--" in render("x", 0, GiB, 0, 1, rate=0)
    assert human_duration(3725) == "1:02:05"


def test_fault_points_can_wait_for_the_nth_time():
    assert faults._armed("a, b@3,c@1") == {"a": 1, "b": 3, "c": 1}


def test_a_record_of_another_spelling_is_the_same_source():
    assert plan.same_source("Gluster-1:24007:/data//app/", "gluster-1:/data/app")
    assert not plan.same_source("gluster-1:/data", "gluster-1:/data/app")
    assert not plan.same_source("pv/pv-1", "gluster-1:/data") and plan.same_source("pv/pv-1", "pv/pv-1")

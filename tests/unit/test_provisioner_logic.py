"""The Kubernetes provisioner's pure logic: StorageClass and claim parsing, the PersistentVolumes it builds, volume
handles, robin's retryable errors, the work queue, backoff and the request rate limiter. No services needed."""
from __future__ import annotations

import json
import threading
import time
import types
from collections import Counter

import pytest
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException

from robin.client import RobinApiError, VolumeRef
from robin.kube import client as kube_module
from robin.kube import volumes as pvs
from robin.kube.claims import ClaimRequest, GiB, MiB, format_bytes, quantity_bytes, volume_name
from robin.kube.classes import (
    CEPHFS_PROVISIONER,
    CSI_DRIVER,
    CSI_PREFIX,
    RBD_PROVISIONER,
    ClassConfig,
    InvalidSpec,
)
from robin.kube.client import KubeError, TokenBucket
from robin.provisioner import backoff as backoff_module
from robin.provisioner import workqueue as workqueue_module
from robin.provisioner.backoff import Backoff
from robin.provisioner.workqueue import WorkQueue

UID = "0b7c3a52-6f1e-4c49-9d0e-2f5b8c1d9a77"


def storage_class(provisioner=RBD_PROVISIONER, name="fast", **fields) -> dict:
    parameters = fields.pop("parameters", None)
    sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
          "provisioner": provisioner, **fields}
    if parameters is not None:
        sc["parameters"] = parameters
    return sc


def parse_class(provisioner=RBD_PROVISIONER, **parameters) -> ClassConfig:
    return ClassConfig.parse(storage_class(provisioner, parameters=parameters))


RBD = parse_class(RBD_PROVISIONER)
CEPHFS = parse_class(CEPHFS_PROVISIONER)


def claim(storage="1Gi", modes=("ReadWriteOnce",), volume_mode=None, limit=None, namespace="team-a", name="data",
          **spec) -> dict:
    resources = {"requests": {"storage": storage}} if storage is not None else {}
    if limit is not None:
        resources["limits"] = {"storage": limit}
    spec = {"accessModes": list(modes), "resources": resources, "storageClassName": "fast", **spec}
    if volume_mode is not None:
        spec["volumeMode"] = volume_mode
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace, "uid": UID, "resourceVersion": "42"}, "spec": spec}


# --- ClassConfig ------------------------------------------------------------------------------------------------

def test_class_kind_comes_from_the_provisioner_name():
    assert parse_class(RBD_PROVISIONER).kind == "rbd"
    assert parse_class(CEPHFS_PROVISIONER).kind == "cephfs"


def test_class_defaults_and_fields():
    default = ClassConfig.parse(storage_class(name="plain"))
    assert (default.name, default.provisioner, default.reclaim_policy, default.allow_expansion,
            default.mount_options, default.parameters, default.volume_source) == (
        "plain", RBD_PROVISIONER, "Delete", False, (), {}, "csi")
    given = ClassConfig.parse(storage_class(CEPHFS_PROVISIONER, reclaimPolicy="Retain", allowVolumeExpansion=True,
                                            mountOptions=["noatime", "debug"], parameters={"fs": "cephfs"}))
    assert (given.reclaim_policy, given.allow_expansion, given.mount_options, given.parameters) == (
        "Retain", True, ("noatime", "debug"), {"fs": "cephfs"})


def test_unknown_parameter_is_refused_by_name():
    with pytest.raises(InvalidSpec) as info:
        parse_class(pool="rbd", colour="blue")
    assert "colour" in str(info.value) and "fast" in str(info.value)


@pytest.mark.parametrize("parameter", ["pool", "imageFeatures", "fsType", CSI_PREFIX + "fstype"])
def test_rbd_parameters_are_refused_on_a_cephfs_class(parameter):
    with pytest.raises(InvalidSpec, match=parameter):
        parse_class(CEPHFS_PROVISIONER, **{parameter: "x"})
    parse_class(RBD_PROVISIONER, **{parameter: "x"})  # ... and fine where they belong


def test_cephfs_parameters_are_refused_on_an_rbd_class():
    with pytest.raises(InvalidSpec, match="fs"):
        parse_class(RBD_PROVISIONER, fs="cephfs")
    assert parse_class(CEPHFS_PROVISIONER, fs="cephfs").param("fs") == "cephfs"


@pytest.mark.parametrize("provisioner", [RBD_PROVISIONER, CEPHFS_PROVISIONER])
def test_common_parameters_are_known_to_both_kinds(provisioner):
    common = {"cluster": "ceph1", "volumeSource": "csi", "monitors": "10.0.0.1:6789", "userId": "kube",
              "userSecretName": "ceph-kube", "userSecretNamespace": "ceph", "projectQuotaBytes": "1Ti",
              "projectQuotaVolumes": "10", "projectQuotaSnapshots": "20",
              CSI_PREFIX + "node-stage-secret-name": "s", CSI_PREFIX + "node-stage-secret-namespace": "ns",
              CSI_PREFIX + "node-publish-secret-name": "p", CSI_PREFIX + "node-publish-secret-namespace": "ns"}
    assert parse_class(provisioner, **common).parameters == common


@pytest.mark.parametrize("value, expected", [("csi", "csi"), ("in-tree", "in-tree"), ("", "csi")])
def test_volume_source(value, expected):
    assert parse_class(volumeSource=value, userSecretName="ceph-key", userId="kube").volume_source == expected


@pytest.mark.parametrize("value", ["flex", "CSI", "intree"])
def test_unknown_volume_source_is_refused(value):
    with pytest.raises(InvalidSpec, match="volumeSource"):
        parse_class(volumeSource=value)


@pytest.mark.parametrize("provisioner", [RBD_PROVISIONER, CEPHFS_PROVISIONER])
@pytest.mark.parametrize("secret", [None, ""])
def test_in_tree_needs_a_user_secret(provisioner, secret):
    parameters = {"volumeSource": "in-tree", "userId": "kube"}
    if secret is not None:
        parameters["userSecretName"] = secret
    with pytest.raises(InvalidSpec, match="needs userSecretName"):
        parse_class(provisioner, **parameters)


@pytest.mark.parametrize("provisioner", [RBD_PROVISIONER, CEPHFS_PROVISIONER])
@pytest.mark.parametrize("user", [None, ""])
def test_in_tree_never_defaults_to_the_admin_user(provisioner, user):
    parameters = {"volumeSource": "in-tree", "userSecretName": "ceph-key"}
    if user is not None:
        parameters["userId"] = user
    with pytest.raises(InvalidSpec, match="needs userId: userId names the Ceph user"):
        parse_class(provisioner, **parameters)


def test_project_quota_from_the_class():
    klass = parse_class(projectQuotaBytes="100Gi", projectQuotaVolumes="10", projectQuotaSnapshots="5")
    assert klass.project_quota(None) == {"max_bytes": 100 * GiB, "max_volumes": 10, "max_snapshots": 5}
    assert parse_class(projectQuotaBytes="1.5Ti").project_quota(None)["max_bytes"] == 3 * 2**39
    assert parse_class(projectQuotaBytes="500M").project_quota(None)["max_bytes"] == 500_000_000
    assert parse_class(projectQuotaBytes="1073741824").project_quota(None)["max_bytes"] == GiB


def test_project_quota_defaults():
    defaults = {"max_bytes": 7 * GiB, "max_volumes": 3, "max_snapshots": 4}
    assert RBD.project_quota(None) == {"max_bytes": 0, "max_volumes": 0, "max_snapshots": 0}
    assert RBD.project_quota(defaults) == defaults
    assert parse_class(projectQuotaVolumes="9").project_quota(defaults) == {**defaults, "max_volumes": 9}
    assert parse_class(projectQuotaVolumes="").project_quota(defaults) == defaults  # empty = not given


@pytest.mark.parametrize("parameter, value", [
    ("projectQuotaBytes", "lots"),
    ("projectQuotaBytes", "100GB"),
    ("projectQuotaBytes", "NaN"),
    ("projectQuotaVolumes", "ten"),
    ("projectQuotaVolumes", "1.5"),
    ("projectQuotaVolumes", "10Gi"),
    ("projectQuotaSnapshots", "x"),
])
def test_malformed_project_quota_is_refused_at_parse(parameter, value):
    with pytest.raises(InvalidSpec, match="projectQuota"):
        parse_class(**{parameter: value})


@pytest.mark.parametrize("parameter, value", [
    ("projectQuotaBytes", "-1Gi"), ("projectQuotaVolumes", "-1"), ("projectQuotaSnapshots", "-3")])
def test_negative_project_quota_is_refused(parameter, value):
    with pytest.raises(InvalidSpec, match="negative"):
        parse_class(**{parameter: value})


@pytest.mark.parametrize("value", ["inf", "Infinity"])
def test_infinite_project_quota_is_refused(value):
    with pytest.raises(InvalidSpec, match="projectQuotaBytes"):
        parse_class(projectQuotaBytes=value)


def test_volume_fields_rbd():
    klass = parse_class(cluster="ceph1", pool="fast", imageFeatures="layering, exclusive-lock,,object-map ")
    assert klass.volume_fields() == {"cluster": "ceph1", "pool": "fast",
                                     "features": ["layering", "exclusive-lock", "object-map"]}
    assert parse_class(pool="rbd").volume_fields() == {"pool": "rbd"}
    assert parse_class(imageFeatures="").volume_fields() == {}
    assert RBD.volume_fields() == {}


def test_volume_fields_cephfs():
    assert parse_class(CEPHFS_PROVISIONER, cluster="ceph1", fs="cephfs").volume_fields() == {
        "cluster": "ceph1", "fs": "cephfs"}
    assert CEPHFS.volume_fields() == {}


def test_fs_type_default_and_both_spellings():
    assert RBD.fs_type == "ext4"
    assert parse_class(fsType="xfs").fs_type == "xfs"
    assert parse_class(**{CSI_PREFIX + "fstype": "xfs"}).fs_type == "xfs"
    assert parse_class(fsType="ext3", **{CSI_PREFIX + "fstype": "xfs"}).fs_type == "ext3"
    assert parse_class(fsType="", **{CSI_PREFIX + "fstype": "xfs"}).fs_type == "xfs"


def test_monitors():
    assert parse_class(monitors="10.0.0.1:6789, 10.0.0.2:6789,, [fd00::3]:3300 ").monitors == [
        "10.0.0.1:6789", "10.0.0.2:6789", "[fd00::3]:3300"]
    assert parse_class(monitors="mon.example.com").monitors == ["mon.example.com"]
    assert RBD.monitors == []
    assert parse_class(monitors=" , ").monitors == []


# --- ClaimRequest ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("storage, expected", [
    ("1Gi", GiB),
    ("1.5Gi", 1536 * MiB),
    ("100M", 96 * MiB),  # 100,000,000 bytes is 95.37 MiB
    ("1", MiB),
    ("1e9", 954 * MiB),  # 953.67 MiB
    ("1Mi", MiB),
    ("1Ki", MiB),
    ("0", MiB),  # at least 1 MiB
    ("1048577", 2 * MiB),
    ("1Ti", 2**40),
])
def test_size_is_rounded_up_to_whole_mib(storage, expected):
    assert ClaimRequest.parse(claim(storage), RBD).size_bytes == expected


def test_huge_size_is_still_rounded_up():
    size = ClaimRequest.parse(claim(str(2**53 + 1)), RBD).size_bytes
    assert size >= 2**53 + 1 and size % MiB == 0


def test_claim_request_fields():
    request = ClaimRequest.parse(claim("2Gi", modes=("ReadWriteOnce", "ReadOnlyMany")), RBD)
    assert request == ClaimRequest(size_bytes=2 * GiB, access_modes=("ReadWriteOnce", "ReadOnlyMany"),
                                   volume_mode="Filesystem", clone_of=None)
    assert ClaimRequest.parse(claim(volume_mode="Block"), RBD).volume_mode == "Block"


@pytest.mark.parametrize("storage, limit", [("1Gi", "1Gi"), ("100M", "1Gi"), ("1Mi", "1Mi"), ("1", "1Mi")])
def test_size_within_limit(storage, limit):
    assert ClaimRequest.parse(claim(storage, limit=limit), RBD).size_bytes <= quantity_bytes(limit)


@pytest.mark.parametrize("storage, limit", [("100M", "100M"), ("2Gi", "1Gi"), ("1", "1"), ("1Mi", "1000Ki")])
def test_rounded_size_above_limit_is_refused(storage, limit):
    with pytest.raises(InvalidSpec, match="limit"):
        ClaimRequest.parse(claim(storage, limit=limit), RBD)


@pytest.mark.parametrize("storage", ["lots", "1GB", "Gi", "1.2.3Mi"])
def test_bad_quantity_is_refused(storage):
    with pytest.raises(InvalidSpec, match="quantity"):
        ClaimRequest.parse(claim(storage), RBD)


def test_bad_limit_quantity_is_refused():
    with pytest.raises(InvalidSpec):
        ClaimRequest.parse(claim("1Gi", limit="plenty"), RBD)


@pytest.mark.parametrize("storage", [None, ""])
def test_claim_without_storage_is_refused(storage):
    with pytest.raises(InvalidSpec, match="no storage"):
        ClaimRequest.parse(claim(storage), RBD)


def test_selector_is_refused():
    with pytest.raises(InvalidSpec, match="selector"):
        ClaimRequest.parse(claim(selector={"matchLabels": {"tier": "gold"}}), RBD)
    ClaimRequest.parse(claim(selector={}), RBD)  # an empty selector selects nothing in particular


def test_read_write_many_on_an_rbd_file_system_is_refused():
    with pytest.raises(InvalidSpec, match="ReadWriteMany"):
        ClaimRequest.parse(claim(modes=("ReadWriteMany",)), RBD)
    with pytest.raises(InvalidSpec, match="ReadWriteMany"):
        ClaimRequest.parse(claim(modes=("ReadWriteOnce", "ReadWriteMany"), volume_mode="Filesystem"), RBD)


def test_read_write_many_allowed_on_rbd_block_and_cephfs():
    assert ClaimRequest.parse(claim(modes=("ReadWriteMany",), volume_mode="Block"), RBD).access_modes == (
        "ReadWriteMany",)
    assert ClaimRequest.parse(claim(modes=("ReadWriteMany",)), CEPHFS).access_modes == ("ReadWriteMany",)
    assert ClaimRequest.parse(claim(modes=("ReadWriteMany",), volume_mode="Filesystem"), CEPHFS).volume_mode == (
        "Filesystem")


@pytest.mark.parametrize("modes", [("ReadWriteOnce",), ("ReadOnlyMany",), ("ReadWriteOncePod",)])
def test_other_modes_on_an_rbd_file_system(modes):
    assert ClaimRequest.parse(claim(modes=modes), RBD).access_modes == modes


def test_block_on_cephfs_is_refused():
    with pytest.raises(InvalidSpec, match="Block"):
        ClaimRequest.parse(claim(volume_mode="Block"), CEPHFS)


@pytest.mark.parametrize("modes", [(), ("ReadWriteSometimes",), ("ReadWriteOnce", "RWX")])
@pytest.mark.parametrize("klass", [RBD, CEPHFS], ids=["rbd", "cephfs"])
def test_empty_or_unknown_access_modes_are_refused(modes, klass):
    with pytest.raises(InvalidSpec, match="access modes"):
        ClaimRequest.parse(claim(modes=modes), klass)


def pvc_source(name="origin", **extra) -> dict:
    return {"kind": "PersistentVolumeClaim", "name": name, **extra}


def test_clone_of_a_claim_on_rbd():
    assert ClaimRequest.parse(claim(dataSource=pvc_source()), RBD).clone_of == "origin"
    assert ClaimRequest.parse(claim(dataSource=pvc_source(apiGroup="")), RBD).clone_of == "origin"
    same_namespace = pvc_source(namespace="team-a")
    assert ClaimRequest.parse(claim(dataSourceRef=same_namespace), RBD).clone_of == "origin"


def test_clone_on_cephfs_is_refused():
    with pytest.raises(InvalidSpec, match="RBD"):
        ClaimRequest.parse(claim(dataSource=pvc_source()), CEPHFS)


def test_clone_from_a_snapshot_is_refused():
    snapshot = {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap"}
    with pytest.raises(InvalidSpec, match="snapshot.storage.k8s.io/VolumeSnapshot"):
        ClaimRequest.parse(claim(dataSource=snapshot), RBD)
    with pytest.raises(InvalidSpec, match="PersistentVolumeClaim only"):
        ClaimRequest.parse(claim(dataSource=pvc_source(apiGroup="example.com")), RBD)


def test_clone_from_another_namespace_is_refused():
    with pytest.raises(InvalidSpec, match="another namespace"):
        ClaimRequest.parse(claim(dataSourceRef=pvc_source(namespace="team-b")), RBD)


def test_data_source_ref_is_preferred():
    request = ClaimRequest.parse(claim(dataSource=pvc_source("old"), dataSourceRef=pvc_source("new")), RBD)
    assert request.clone_of == "new"
    snapshot = {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap"}
    with pytest.raises(InvalidSpec, match="VolumeSnapshot"):
        ClaimRequest.parse(claim(dataSource=pvc_source(), dataSourceRef=snapshot), RBD)


# --- helpers -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size, text", [
    (GiB, "1Gi"), (1536 * MiB, "1536Mi"), (2**40, "1Ti"), (3 * 2**40, "3Ti"), (1024, "1Ki"), (1000, "1000"),
    (1, "1"), (MiB, "1Mi"), (5 * 2**40 + MiB, f"{5 * 2**20 + 1}Mi"), (2**50, "1024Ti"), (GiB + 1024, "1048577Ki"),
])
def test_format_bytes(size, text):
    assert format_bytes(size) == text
    assert quantity_bytes(text) == size


@pytest.mark.parametrize("quantity, size", [
    ("1Gi", GiB), ("1.5Gi", 1536 * MiB), ("500M", 500_000_000), ("1", 1), ("1.5", 2), ("100m", 1), ("1k", 1000),
    ("1e3", 1000), ("0", 0)])
def test_quantity_bytes(quantity, size):
    assert quantity_bytes(quantity) == size


def test_quantity_bytes_refuses_garbage():
    with pytest.raises(ValueError):
        quantity_bytes("lots")


def test_volume_name_is_fixed_by_the_uid():
    assert volume_name(claim()) == f"pvc-{UID}"
    assert volume_name(claim(name="other", namespace="elsewhere")) == f"pvc-{UID}"


# --- the PersistentVolume ----------------------------------------------------------------------------------------

CLUSTER = {"name": "ceph1", "fsid": "6a1f0c5e-fsid", "monitors": ["10.0.0.1:6789", "10.0.0.2:6789"]}
RBD_REF = VolumeRef("rbd", "team-a", f"pvc-{UID}")
CEPHFS_REF = VolumeRef("cephfs", "team-a", f"pvc-{UID}")
RBD_VOLUME = {"name": f"pvc-{UID}", "pool": "fast", "cluster": "ceph1", "size_bytes": GiB}
CEPHFS_VOLUME = {"name": f"pvc-{UID}", "fs": "cephfs", "path": f"/volumes/team-a/pvc-{UID}", "cluster": "ceph1",
                 "quota_bytes": GiB}


def build(klass, ref, volume, the_claim=None, cluster=CLUSTER, size=GiB):
    the_claim = the_claim or claim()
    request = ClaimRequest.parse(the_claim, klass)
    return pvs.build(the_claim, klass, request, ref, volume, size, cluster)


def test_csi_rbd_volume():
    klass = ClassConfig.parse(storage_class(reclaimPolicy="Retain", mountOptions=["discard"],
                                            parameters={"pool": "fast", "fsType": "xfs"}))
    pv = build(klass, RBD_REF, RBD_VOLUME, size=GiB + 512 * MiB)
    assert pv["apiVersion"] == "v1" and pv["kind"] == "PersistentVolume"
    assert pv["metadata"] == {
        "name": f"pvc-{UID}", "labels": {pvs.PROJECT_LABEL: "team-a"},
        "annotations": {pvs.PROVISIONED_BY: RBD_PROVISIONER, pvs.VOLUME_ANNOTATION: f"rbd:team-a:pvc-{UID}"},
        "finalizers": [pvs.VOLUME_FINALIZER]}
    spec = pv["spec"]
    assert spec["capacity"] == {"storage": "1536Mi"}
    assert spec["accessModes"] == ["ReadWriteOnce"]
    assert spec["persistentVolumeReclaimPolicy"] == "Retain"
    assert spec["storageClassName"] == "fast" and spec["volumeMode"] == "Filesystem"
    assert spec["claimRef"] == {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "team-a",
                                "name": "data", "uid": UID}
    assert spec["mountOptions"] == ["discard"]
    assert "rbd" not in spec and "cephfs" not in spec
    assert spec["csi"] == {
        "driver": CSI_DRIVER, "volumeHandle": f"rbd:team-a:pvc-{UID}", "fsType": "xfs",
        "volumeAttributes": {"type": "rbd", "project": "team-a", "cluster": "ceph1", "clusterID": "6a1f0c5e-fsid",
                             "monitors": "10.0.0.1:6789,10.0.0.2:6789", "pool": "fast", "imageName": f"pvc-{UID}"}}


def test_csi_rbd_block_volume_has_no_fs_type_nor_mount_options():
    klass = ClassConfig.parse(storage_class(mountOptions=["discard"], parameters={"fsType": "xfs"}))
    pv = build(klass, RBD_REF, RBD_VOLUME, claim(modes=("ReadWriteMany",), volume_mode="Block"))
    assert pv["spec"]["volumeMode"] == "Block" and pv["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "fsType" not in pv["spec"]["csi"]
    assert "mountOptions" not in pv["spec"]


def test_csi_rbd_default_fs_type_and_no_mount_options():
    pv = build(RBD, RBD_REF, RBD_VOLUME)
    assert pv["spec"]["csi"]["fsType"] == "ext4"
    assert "mountOptions" not in pv["spec"]
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"


def test_csi_cephfs_volume():
    klass = ClassConfig.parse(storage_class(CEPHFS_PROVISIONER, mountOptions=["noatime"],
                                            parameters={"fs": "cephfs"}))
    pv = build(klass, CEPHFS_REF, CEPHFS_VOLUME, claim(modes=("ReadWriteMany",)))
    assert pv["metadata"]["annotations"] == {pvs.PROVISIONED_BY: CEPHFS_PROVISIONER,
                                             pvs.VOLUME_ANNOTATION: f"cephfs:team-a:pvc-{UID}"}
    assert pv["spec"]["mountOptions"] == ["noatime"]
    assert pv["spec"]["csi"] == {
        "driver": CSI_DRIVER, "volumeHandle": f"cephfs:team-a:pvc-{UID}",
        "volumeAttributes": {"type": "cephfs", "project": "team-a", "cluster": "ceph1", "clusterID": "6a1f0c5e-fsid",
                             "monitors": "10.0.0.1:6789,10.0.0.2:6789", "fsName": "cephfs",
                             "path": f"/volumes/team-a/pvc-{UID}"}}


def test_csi_cephfs_volume_carries_how_nodes_mount_it():
    mount = {"mounter": "fuse", "kernelMountOptions": "ms_mode=secure", "fuseMountOptions": "noatime"}
    klass = ClassConfig.parse(storage_class(CEPHFS_PROVISIONER, parameters={"fs": "cephfs", **mount}))
    attributes = build(klass, CEPHFS_REF, CEPHFS_VOLUME, claim(modes=("ReadWriteMany",)))["spec"]["csi"][
        "volumeAttributes"]
    assert {k: attributes[k] for k in mount} == mount and attributes["clusterID"] == "6a1f0c5e-fsid"
    with pytest.raises(InvalidSpec, match="mounter must be kernel or fuse"):
        ClassConfig.parse(storage_class(CEPHFS_PROVISIONER, parameters={"fs": "cephfs", "mounter": "nfs"}))
    with pytest.raises(InvalidSpec, match="mounter"):
        ClassConfig.parse(storage_class(RBD_PROVISIONER, parameters={"pool": "rbd", "mounter": "fuse"}))


def test_csi_monitors_of_the_class_win_and_cluster_may_lack_them():
    pv = build(parse_class(monitors="192.168.1.1:3300"), RBD_REF, RBD_VOLUME)
    assert pv["spec"]["csi"]["volumeAttributes"]["monitors"] == "192.168.1.1:3300"
    pv = build(RBD, RBD_REF, RBD_VOLUME, cluster={"name": "ceph1"})
    assert pv["spec"]["csi"]["volumeAttributes"]["monitors"] == ""
    assert pv["spec"]["csi"]["volumeAttributes"]["clusterID"] == ""


def test_csi_node_secret_refs():
    klass = parse_class(**{CSI_PREFIX + "node-stage-secret-name": "stage", CSI_PREFIX + "node-stage-secret-namespace":
                           "ceph-csi", CSI_PREFIX + "node-publish-secret-name": "publish"})
    csi = build(klass, RBD_REF, RBD_VOLUME)["spec"]["csi"]
    assert csi["nodeStageSecretRef"] == {"name": "stage", "namespace": "ceph-csi"}
    assert csi["nodePublishSecretRef"] == {"name": "publish", "namespace": "default"}
    plain = build(RBD, RBD_REF, RBD_VOLUME)["spec"]["csi"]
    assert "nodeStageSecretRef" not in plain and "nodePublishSecretRef" not in plain


def test_in_tree_rbd_volume():
    klass = parse_class(volumeSource="in-tree", userSecretName="ceph-key", userId="kube", fsType="xfs")
    pv = build(klass, RBD_REF, RBD_VOLUME)
    assert "csi" not in pv["spec"]
    assert pv["spec"]["rbd"] == {"monitors": ["10.0.0.1:6789", "10.0.0.2:6789"], "pool": "fast",
                                 "image": f"pvc-{UID}", "user": "kube",
                                 "secretRef": {"name": "ceph-key", "namespace": "team-a"}, "fsType": "xfs"}
    assert pv["spec"]["claimRef"]["uid"] == UID
    assert pv["metadata"]["finalizers"] == [pvs.VOLUME_FINALIZER]
    assert pv["metadata"]["annotations"][pvs.VOLUME_ANNOTATION] == RBD_REF.handle


def test_in_tree_rbd_block_defaults_and_explicit_secret_namespace():
    klass = parse_class(volumeSource="in-tree", userSecretName="ceph-key", userSecretNamespace="ceph",
                        userId="kube", monitors="mon1:6789,mon2:6789")
    rbd = build(klass, RBD_REF, RBD_VOLUME, claim(volume_mode="Block"))["spec"]["rbd"]
    assert rbd == {"monitors": ["mon1:6789", "mon2:6789"], "pool": "fast", "image": f"pvc-{UID}", "user": "kube",
                   "secretRef": {"name": "ceph-key", "namespace": "ceph"}}


def test_in_tree_cephfs_volume():
    klass = ClassConfig.parse(storage_class(CEPHFS_PROVISIONER, mountOptions=["noatime"],
                                            parameters={"volumeSource": "in-tree", "userSecretName": "ceph-key",
                                                        "userId": "kube"}))
    pv = build(klass, CEPHFS_REF, CEPHFS_VOLUME, claim(modes=("ReadWriteMany",), namespace="team-b"))
    assert "csi" not in pv["spec"] and "rbd" not in pv["spec"]
    assert pv["spec"]["cephfs"] == {"monitors": ["10.0.0.1:6789", "10.0.0.2:6789"],
                                    "path": f"/volumes/team-a/pvc-{UID}", "user": "kube",
                                    "secretRef": {"name": "ceph-key", "namespace": "team-b"}}
    assert pv["spec"]["mountOptions"] == ["noatime"]
    assert pv["spec"]["claimRef"]["namespace"] == "team-b"


@pytest.mark.parametrize("provisioner, ref, volume", [
    (RBD_PROVISIONER, RBD_REF, RBD_VOLUME), (CEPHFS_PROVISIONER, CEPHFS_REF, CEPHFS_VOLUME)])
def test_in_tree_without_monitors_is_refused(provisioner, ref, volume):
    klass = parse_class(provisioner, volumeSource="in-tree", userSecretName="ceph-key", userId="kube")
    with pytest.raises(InvalidSpec, match="monitors"):
        build(klass, ref, volume, cluster={"name": "ceph1", "fsid": "x", "monitors": []})


def test_our_volume_recognises_our_pvs_only():
    pv = build(RBD, RBD_REF, RBD_VOLUME)
    assert pvs.our_volume(pv) == RBD_REF
    assert pvs.our_volume(build(CEPHFS, CEPHFS_REF, CEPHFS_VOLUME)) == CEPHFS_REF
    assert pvs.our_volume(None) is None

    def with_annotations(annotations):
        return {**pv, "metadata": {**pv["metadata"], "annotations": annotations}}

    assert pvs.our_volume({"metadata": {"name": "x"}, "spec": {}}) is None
    assert pvs.our_volume(with_annotations(None)) is None
    assert pvs.our_volume(with_annotations({pvs.VOLUME_ANNOTATION: RBD_REF.handle})) is None
    assert pvs.our_volume(with_annotations({pvs.PROVISIONED_BY: "rbd.csi.ceph.com",
                                            pvs.VOLUME_ANNOTATION: RBD_REF.handle})) is None
    assert pvs.our_volume(with_annotations({pvs.PROVISIONED_BY: RBD_PROVISIONER})) is None
    for handle in ("", "rbd:team-a", "nfs:team-a:x", "rbd::x", "rbd:team-a:x:y"):
        assert pvs.our_volume(with_annotations({pvs.PROVISIONED_BY: RBD_PROVISIONER,
                                                pvs.VOLUME_ANNOTATION: handle})) is None


# --- VolumeRef, RobinApiError, KubeError ------------------------------------------------------------------------

@pytest.mark.parametrize("ref", [VolumeRef("rbd", "team-a", "pvc-1"), VolumeRef("cephfs", "p", "a.b_c-D9")])
def test_volume_ref_round_trip(ref):
    assert VolumeRef.parse(ref.handle) == ref
    assert ref.handle == f"{ref.kind}:{ref.project}:{ref.name}"


@pytest.mark.parametrize("handle", ["", "rbd", "rbd:p", "rbd:p:n:x", "nfs:p:n", "RBD:p:n", ":p:n", "rbd::n",
                                    "rbd:p:", "::"])
def test_malformed_volume_handles_are_refused(handle):
    with pytest.raises(ValueError, match="handle"):
        VolumeRef.parse(handle)


@pytest.mark.parametrize("status, code, retryable", [
    (0, "unreachable", True), (500, "internal", True), (502, "http_error", True), (503, "ceph_unavailable", True),
    (504, "ceph_timeout", True), (409, "volume_busy", True), (409, "ceph_busy", True), (409, "conflict", False),
    (400, "invalid", False), (404, "not_found", False), (403, "forbidden", False), (422, "quota_exceeded", False),
    (429, "rate_limited", False)])
def test_robin_api_error_retryable(status, code, retryable):
    assert RobinApiError(status, code, "m").retryable is retryable


def api_exception(status, reason, body=None, headers=None) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body, exc.headers = body, headers
    return exc


def test_kube_error_from_a_status_object():
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409, "reason": "Conflict",
              "message": 'leases.coordination.k8s.io "robin" is being modified'}
    error = KubeError.from_api_exception(api_exception(409, "Conflict", json.dumps(status).encode()))
    assert (error.status, error.reason, error.message, error.retry_after) == (409, "Conflict", status["message"],
                                                                                None)
    assert str(error) == f"409 Conflict: {status['message']}"


def test_kube_error_retry_after_and_bodies_that_are_not_status_objects():
    error = KubeError.from_api_exception(api_exception(429, "Too Many Requests", b"{}", {"Retry-After": "3"}))
    assert (error.status, error.reason, error.message, error.retry_after) == (429, "Too Many Requests",
                                                                                "Too Many Requests", 3.0)
    error = KubeError.from_api_exception(api_exception(502, "Bad Gateway", b"<html>bad gateway</html>"))
    assert (error.status, error.reason, error.message) == (502, "Bad Gateway", "Bad Gateway")
    error = KubeError.from_api_exception(api_exception(None, None))
    assert (error.status, error.reason) == (0, "Unknown")


@pytest.mark.parametrize("body", [b'"Bad Gateway"', b"[]", b"null"])
def test_kube_error_from_a_json_body_that_is_not_an_object(body):
    error = KubeError.from_api_exception(api_exception(502, "Bad Gateway", body))
    assert (error.status, error.reason) == (502, "Bad Gateway")


# --- WorkQueue -----------------------------------------------------------------------------------------------------

def drain(queue: WorkQueue) -> list[str]:
    keys = []
    while (key := queue.get(timeout=0)) is not None:
        keys.append(key)
        queue.done(key)
    return keys


def test_a_key_added_many_times_is_handed_out_once():
    queue = WorkQueue(retry_base=0.001, retry_max=0.01)
    for key in ("a", "b", "a", "a", "c", "b"):
        queue.add(key)
    assert queue.depth() == 3
    assert [queue.get(timeout=1), queue.get(timeout=1), queue.get(timeout=1)] == ["a", "b", "c"]
    assert queue.get(timeout=0.01) is None
    assert queue.depth() == 0


def test_a_key_added_while_processing_waits_for_done():
    queue = WorkQueue(retry_base=0.001, retry_max=0.01)
    queue.add("a")
    assert queue.get(timeout=1) == "a"
    queue.add("a")
    queue.add("a")
    assert queue.get(timeout=0.02) is None  # not to a second worker while the first has it
    got: list[str | None] = []
    waiter = threading.Thread(target=lambda: got.append(queue.get(timeout=10)))
    waiter.start()
    try:
        queue.done("a")
        waiter.join(timeout=10)
        assert not waiter.is_alive() and got == ["a"]
        assert queue.get(timeout=0.01) is None  # once, though added twice
        queue.done("a")
        assert queue.get(timeout=0.01) is None  # done without a new add: not again
    finally:
        queue.shutdown()
        waiter.join(timeout=10)


def test_a_key_is_never_handled_by_two_workers_at_once():
    queue = WorkQueue(retry_base=0.001, retry_max=0.01)
    keys = [f"k{i}" for i in range(3)]
    lock = threading.Lock()
    active: Counter = Counter()
    handled: Counter = Counter()
    overlaps: list[str] = []
    producing = threading.Event()
    producing.set()

    def worker():
        while True:
            key = queue.get(timeout=0.05)
            if key is None:
                if producing.is_set():
                    continue
                return
            with lock:
                active[key] += 1
                if active[key] > 1:
                    overlaps.append(key)
                handled[key] += 1
                again = handled[key] % 7 == 0
            time.sleep(0.0005)
            if again:  # re-queued by its own handler now and then
                queue.add(key)
            with lock:
                active[key] -= 1
            queue.done(key)

    workers = [threading.Thread(target=worker) for _ in range(4)]
    for thread in workers:
        thread.start()
    try:
        for i in range(600):
            queue.add(keys[i % len(keys)])
            if i % 50 == 0:
                time.sleep(0.001)
    finally:
        producing.clear()
        for thread in workers:
            thread.join(timeout=10)
        queue.shutdown()
    assert not any(thread.is_alive() for thread in workers)
    assert overlaps == []
    assert set(handled) == set(keys)
    assert queue.depth() == 0


def test_add_after_delivers_after_the_delay(monkeypatch):
    clock = FakeClock()  # the queue's time moves only when the test moves it: no window a slow machine can miss
    monkeypatch.setattr(workqueue_module, "time", clock)
    queue = WorkQueue(retry_base=0.001, retry_max=0.01)
    queue.add_after("later", 60)
    queue.add_after("soon", 0.5)
    assert queue.depth() == 2
    assert queue.get(timeout=0) is None  # not yet due
    clock.now += 0.25
    assert queue.get(timeout=0) is None  # half-way: still not due
    clock.now += 0.25
    assert queue.get(timeout=0) == "soon"
    queue.done("soon")
    assert queue.depth() == 1  # "later" still waits
    assert queue.get(timeout=0) is None
    clock.now += 60
    assert queue.get(timeout=0) == "later"


def test_add_after_wakes_a_blocked_get_and_dedups_with_the_queue():
    queue = WorkQueue(retry_base=0.001, retry_max=0.01)
    got: list[str | None] = []
    waiter = threading.Thread(target=lambda: got.append(queue.get(timeout=10)))
    waiter.start()
    try:
        queue.add_after("a", 0.01)  # the getter waits without timeout for the due time it did not know about
        waiter.join(timeout=10)
        assert got == ["a"]
    finally:
        queue.shutdown()
        waiter.join(timeout=10)
    queue = WorkQueue(retry_base=0.001, retry_max=0.01)
    queue.add("b")
    queue.add_after("b", 0)
    assert queue.get(timeout=1) == "b"
    assert queue.get(timeout=0.01) is None  # the due copy joined the queued one


def test_add_rate_limited_delays_grow_per_key_and_reset_with_forget():
    base, cap = 0.004, 0.02
    queue = WorkQueue(retry_base=base, retry_max=cap)

    def retry(key):
        start = time.monotonic()
        delay = queue.add_rate_limited(key)
        assert queue.get(timeout=10) == key
        assert time.monotonic() - start >= delay - 1e-6
        queue.done(key)
        return delay

    delays = [retry("a") for _ in range(5)]
    expected = [base, 2 * base, 4 * base, cap, cap]
    for delay, nominal in zip(delays, expected, strict=True):
        assert 0.9 * nominal - 1e-9 <= delay <= nominal  # up to 10% jitter, downwards
    assert delays[0] < delays[1] < delays[2]
    assert 0.9 * base - 1e-9 <= retry("b") <= base  # another key starts afresh
    queue.forget("a")
    assert 0.9 * base - 1e-9 <= retry("a") <= base
    assert 2 * 0.9 * base - 1e-9 <= retry("a") <= 2 * base
    assert queue.add_rate_limited("c", at_least=0.03) == 0.03  # a server's Retry-After wins when longer
    assert queue.depth() == 1


def test_depth_counts_each_key_once():
    queue = WorkQueue(retry_base=0.001, retry_max=0.01)
    queue.add("a")
    queue.add_after("a", 60)
    queue.add_after("b", 60)
    queue.add_after("b", 30)
    assert queue.depth() == 2


def test_get_returns_none_on_timeout():
    queue = WorkQueue(retry_base=0.001, retry_max=0.01)
    start = time.monotonic()
    assert queue.get(timeout=0.05) is None
    assert time.monotonic() - start >= 0.05 - 1e-6
    assert queue.get(timeout=0) is None


def test_shutdown_wakes_a_blocked_get():
    queue = WorkQueue(retry_base=0.001, retry_max=0.01)
    got: list[str | None] = []
    started = threading.Event()

    def wait():
        started.set()
        got.append(queue.get())  # no timeout: only shutdown() can end this

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    started.wait(5)
    queue.shutdown()
    waiter.join(timeout=10)
    assert not waiter.is_alive() and got == [None]
    queue.add("a")  # ignored once shut down
    assert queue.get(timeout=0.01) is None


# --- Backoff, TokenBucket ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("jitter, factor", [(0.0, 0.9), (1.0, 1.0), (0.5, 0.95)])
def test_backoff_growth_cap_and_reset(monkeypatch, jitter, factor):
    monkeypatch.setattr(backoff_module, "random", types.SimpleNamespace(random=lambda: jitter))
    backoff = Backoff(base=0.5, maximum=5.0)
    delays = [backoff.next() for _ in range(7)]
    assert delays == pytest.approx([d * factor for d in (0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0)])
    assert backoff.failures == 7
    for _ in range(100):
        backoff.next()
    assert backoff.next() == pytest.approx(5.0 * factor)  # no overflow after many failures
    backoff.reset()
    assert backoff.failures == 0
    assert backoff.next() == pytest.approx(0.5 * factor)


def test_backoff_jitter_stays_within_ten_percent():
    backoff = Backoff(base=1.0, maximum=100.0)
    for nominal in (1.0, 2.0, 4.0, 8.0):
        assert 0.9 * nominal <= backoff.next() <= nominal


class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(kube_module, "time", fake)
    return fake


def test_token_bucket_burst_is_immediate_then_paced(clock):
    bucket = TokenBucket(rate=10, burst=5)
    for _ in range(5):
        bucket.acquire()
    assert clock.sleeps == []  # the burst needs no waiting
    bucket.acquire()
    assert clock.sleeps == [pytest.approx(0.1)]
    bucket.acquire()
    assert clock.sleeps == [pytest.approx(0.1), pytest.approx(0.1)]


def test_token_bucket_refills_up_to_burst_only(clock):
    bucket = TokenBucket(rate=2, burst=3)
    for _ in range(3):
        bucket.acquire()
    clock.now += 3600  # an idle hour saves up no more than the burst
    for _ in range(3):
        bucket.acquire()
    assert clock.sleeps == []
    bucket.acquire()
    assert clock.sleeps == [pytest.approx(0.5)]
    clock.now += 0.25  # half a token
    bucket.acquire()
    assert clock.sleeps[-1] == pytest.approx(0.25)


def test_token_bucket_real_clock_burst_counts():
    bucket = TokenBucket(rate=0.001, burst=20)  # a second token would take 1000 s
    acquired = threading.Event()
    count = 0

    def take():
        nonlocal count
        for _ in range(20):
            bucket.acquire()
            count += 1
        acquired.set()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    assert acquired.wait(10) and count == 20
    thread.join(timeout=10)


@pytest.mark.parametrize("method, line", [
    ("patch_namespaced_persistent_volume_claim",
     ("PATCH", "/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}")),
    ("patch_namespaced_persistent_volume_claim_status",
     ("PATCH", "/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}/status")),
    ("create_persistent_volume", ("POST", "/api/v1/persistentvolumes")),
    ("delete_persistent_volume", ("DELETE", "/api/v1/persistentvolumes/{name}")),
    ("create_namespaced_event", ("POST", "/api/v1/namespaces/{namespace}/events"))])
def test_kube_sends_the_request_line_of_the_generated_method(method, line):
    """Kube.send skips the generated methods but takes their verb and path, behind a host with a path of its own."""
    configuration = Configuration(host="https://k8s.example:6443/behind/a/proxy")
    kube = kube_module.Kube(ApiClient(configuration), qps=1, burst=1)
    assert kube._request_line(getattr(kube.core, method)) == line


def test_kube_sends_on_its_own_connections_unless_urllib3_does_more():
    """Kube.send asks the configured host on connections of its own (TLS for https) and sends the host's own path
    before the API's; behind a proxy, or with urllib3's hostname pinning, TLS server name, socket options or retries,
    it leaves every request to the kubernetes client's pool manager. (TLS itself: tests/unit/test_kube_tls.py.)"""
    configuration = Configuration(host="https://k8s.example:6443/behind/a/proxy")
    connections, prefix = kube_module.Kube(ApiClient(configuration), qps=1, burst=1)._direct
    assert (connections.host, connections.port, prefix, connections.tls is not None) == (
        "k8s.example", 6443, "/behind/a/proxy", True)
    plain, prefix = kube_module.Kube(ApiClient(Configuration(host="http://127.0.0.1:8001")), qps=1, burst=1)._direct
    assert (plain.host, plain.port, prefix, plain.tls) == ("127.0.0.1", 8001, "", None)
    ipv6, _ = kube_module.Kube(ApiClient(Configuration(host="https://[fd00::1]:443")), qps=1, burst=1)._direct
    assert (ipv6.host, ipv6.port) == ("fd00::1", 443)  # as a socket takes it (in-cluster on an IPv6 cluster)
    for name, value in (("proxy", "http://proxy.example:3128"), ("assert_hostname", "other.example"),
                        ("tls_server_name", "other.example"), ("retries", 5), ("socket_options", [])):
        special = Configuration(host="https://k8s.example:6443")
        setattr(special, name, value)
        assert kube_module.Kube(ApiClient(special), qps=1, burst=1)._direct is None, name

"""helm/robin rendered by real Helm over its default values and every ci/*-values.yaml: it lints clean, its values
pass its schema, and every manifest is valid for the oldest and newest Kubernetes the chart supports."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest

from tests.helm.chart import (
    CHART,
    NAMESPACE,
    VALUES_FILES,
    containers,
    manifests,
    merged_values,
    metadata,
    pod_spec,
    robin_containers,
    values_of,
)

KUBERNETES_VERSIONS = ("1.29.0", "1.34.0")
# Custom resources kubernetes-validate has no schema for; their fields are checked in test_service_monitor.
CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "ServiceMonitor")}
PYPROJECT = CHART.parents[1] / "pyproject.toml"
WARNING = 2  # helm lint's severities: 1 info, 2 warning, 3 error
FSID = "6a1f0c5e-1111-4222-8333-444455556666"


def test_chart_is_robin_at_its_version():
    chart = metadata()
    assert chart["apiVersion"] == "v2"
    robin_version = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    assert chart["appVersion"] == robin_version


@pytest.mark.parametrize("values_file", VALUES_FILES)
@pytest.mark.parametrize("kube_version", KUBERNETES_VERSIONS)
def test_lints_without_warnings(values_file, kube_version):
    report = helm.lint(CHART, values_of(values_file), strict=True, namespace=NAMESPACE,
                       kube_version=f"v{kube_version}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= WARNING] == []


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_values_pass_the_schema(values_file):
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values_of(values_file))


def test_the_validator_knows_both_kubernetes_versions():
    """The versions the chart is checked against are ones the installed kubernetes-validate has schemas for."""
    assert set(KUBERNETES_VERSIONS) <= set(kubernetes_validate.utils.all_versions())


@pytest.mark.parametrize("values_file", VALUES_FILES)
@pytest.mark.parametrize("kube_version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_kubernetes(values_file, kube_version):
    objects = manifests(values_of(values_file))
    assert objects
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_RESOURCES:
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} is not valid for Kubernetes {kube_version}: "
                        f"{exc.message} at {'/'.join(map(str, exc.absolute_path))}")


@pytest.mark.parametrize("bad, where", [
    ({"api": {"replicas": 0}}, "/api/replicas"),
    ({"api": {"replica": 2}}, "replica"),
    ({"csi": {"node": {"mounter": "nbd"}}}, "/csi/node/mounter"),
    ({"csi": {"node": {"clusters": [{"clusterID": FSID, "monitors": ["10.0.0.1:6789 -o x"]}]}}},
     "/csi/node/clusters/0/monitors/0"),
    ({"csi": {"node": {"clusters": [{"clusterID": FSID}]}}}, "monitors"),
    ({"storageClasses": [{"name": "fast", "provisioner": "kubernetes.io/rbd"}]}, "/storageClasses/0/provisioner"),
    ({"storageClasses": [{"provisioner": "robin.io/rbd"}]}, "name"),
    ({"config": {"database_url": "sqlite:///x"}}, "database_url"),
    ({"database": {"url": "mysql://db/robin"}}, "/database/url"),
    ({"apiToken": {"token": "robin_guessable"}}, "/apiToken/token"),
    ({"csi": {"sidecars": {"provisioner": {"image": {"repository": "x", "tag": "", "pullPolicy": "Always"}}}}},
     "/csi/sidecars/provisioner/image/tag"),
    # CephFS users need the node token's Secret: without it every node would fail to start.
    ({"csi": {"node": {"cephfsUsers": {"enabled": True}}}}, "/csi/node/cephfsUsers/existingSecret"),
    ({"csi": {"node": {"cephfsUsers": {"enabled": True, "existingSecret": None}}}}, "existingSecret"),
    ({"csi": {"node": {"cephfsUsers": {"enabled": True, "existingSecret": "Node_Token"}}}},
     "/csi/node/cephfsUsers/existingSecret"),
    ({"csi": {"node": {"cephfsUsers": {"enabled": True, "existingSecret": "node-token", "secretKey": ""}}}},
     "/csi/node/cephfsUsers/secretKey"),
    ({"csi": {"node": {"cephfsUsers": {"enabled": "yes", "existingSecret": "node-token"}}}},
     "/csi/node/cephfsUsers/enabled"),
])
def test_bad_values_are_refused(bad, where):
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError, match=where):
        chart.validate_schema(bad)
    with pytest.raises(helm.HelmValuesError):
        manifests(bad)


@pytest.mark.parametrize("overrides, message", [
    ({"database": {"url": "postgresql://db/robin", "existingSecret": "db"}}, "database.url or its existingSecret"),
    ({"ceph": {"monHost": "10.0.0.1", "existingConfigMap": "ceph"}}, "ceph.monHost or ceph.existingConfigMap"),
    ({"gateway": {"enabled": True}}, "gateway.nodeSelector is required"),
    ({"csi": {"node": {"clusters": [{"clusterID": FSID, "monitors": ["10.0.0.1:6789"]}],
                       "existingClusterMap": "ceph-csi-config"}}}, "csi.node.clusters or csi.node.existingClusterMap"),
])
def test_contradictory_values_are_refused(overrides, message):
    with pytest.raises(helm.HelmRenderError, match=message):
        manifests(overrides)


def _only(objects, kind, component):
    found = [o for o in objects if o["kind"] == kind
             and o["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    assert len(found) == 1, f"{len(found)} {kind} of {component}"
    return found[0]


def test_defaults_run_two_api_replicas_behind_probes_and_a_budget():
    objects = manifests({})
    api = _only(objects, "Deployment", "api")
    assert api["spec"]["replicas"] >= 2
    container = pod_spec(api)["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    budget = _only(objects, "PodDisruptionBudget", "api")
    assert budget["spec"]["selector"]["matchLabels"] == api["spec"]["selector"]["matchLabels"]
    service = _only(objects, "Service", "api")
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]


def test_the_database_is_migrated_before_install_and_upgrade_with_its_url_there_first():
    objects = manifests(values_of("all-components-values.yaml"))
    job = _only(objects, "Job", "db-upgrade")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    url = next(e["valueFrom"]["secretKeyRef"] for e in pod_spec(job)["containers"][0]["env"]
               if e["name"] == "ROBIN_DATABASE_URL")
    secret = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == url["name"])
    assert "pre-install" in secret["metadata"]["annotations"]["helm.sh/hook"]
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])
    assert url["key"] in secret["stringData"]


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_unprivileged_components_are_locked_down(values_file):
    """Only the CSI node plugin (and its sidecars) and the gateway run privileged; the rest run as a non-root user
    on a read-only root, with no capabilities and the runtime's seccomp profile."""
    objects = manifests(values_of(values_file))
    for workload, container in containers(objects):
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        context = container.get("securityContext", {})
        if component in ("csi-node", "gateway"):
            continue
        assert context.get("privileged") is not True, (component, container["name"])
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert context["seccompProfile"]["type"] == "RuntimeDefault"


def test_the_node_plugin_reaches_kubelet_devices_and_modules():
    objects = manifests({})
    node = _only(objects, "DaemonSet", "csi-node")
    plugin = next(c for c in pod_spec(node)["containers"] if c["name"] == "csi-plugin")
    assert plugin["securityContext"]["privileged"] is True
    mounts = {m["mountPath"]: m for m in plugin["volumeMounts"]}
    assert mounts["/var/lib/kubelet"]["mountPropagation"] == "Bidirectional"
    assert {"/dev", "/sys", "/lib/modules"} <= set(mounts)
    registrar = next(c for c in pod_spec(node)["containers"] if c["name"] == "node-driver-registrar")
    assert "--kubelet-registration-path=/var/lib/kubelet/plugins/csi.robin.io/csi.sock" in registrar["args"]


def test_the_node_plugin_reads_its_cluster_map_from_a_configmap_it_sees_change():
    clusters = [{"clusterID": FSID, "monitors": ["10.0.0.1:6789", "10.0.0.2:6789"]}]
    objects = manifests({"csi": {"node": {"clusters": clusters}}})
    cluster_map = _only(objects, "ConfigMap", "cluster-map")
    assert json.loads(cluster_map["data"]["config.json"]) == clusters
    node = _only(objects, "DaemonSet", "csi-node")
    plugin = next(c for c in pod_spec(node)["containers"] if c["name"] == "csi-plugin")
    env = {e["name"]: e.get("value") for e in plugin["env"]}
    mount = next(m for m in plugin["volumeMounts"] if m["name"] == "cluster-map")
    assert env["ROBIN_CSI_CLUSTER_MAP"] == mount["mountPath"] + "/config.json"
    assert "subPath" not in mount  # kubelet never updates a subPath mount of a ConfigMap
    volume = next(v for v in pod_spec(node)["volumes"] if v["name"] == "cluster-map")
    assert volume["configMap"]["name"] == cluster_map["metadata"]["name"]

    assert json.loads(_only(manifests({}), "ConfigMap", "cluster-map")["data"]["config.json"]) == []
    own = manifests({"csi": {"node": {"existingClusterMap": "ceph-csi-config"}}})
    assert not [o for o in own if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("cluster-map")]
    volume = next(v for v in pod_spec(_only(own, "DaemonSet", "csi-node"))["volumes"] if v["name"] == "cluster-map")
    assert volume["configMap"]["name"] == "ceph-csi-config"


def _node_plugin(objects):
    node = _only(objects, "DaemonSet", "csi-node")
    return node, next(c for c in pod_spec(node)["containers"] if c["name"] == "csi-plugin")


def test_the_node_plugin_mounts_cephfs_with_the_nodes_ceph_user_unless_told():
    """By default a node stages CephFS paths with the node-stage Secret's user: it needs no API nor token."""
    node, plugin = _node_plugin(manifests({}))
    assert "--cephfs-users" not in plugin["command"]
    assert not {"ROBIN_URL", "ROBIN_TOKEN", "ROBIN_TOKEN_FILE"} & {e["name"] for e in plugin["env"]}
    assert not [v for v in pod_spec(node)["volumes"] if "secret" in v]


def test_cephfs_users_reach_the_releases_api_service_with_the_node_token():
    """With csi.node.cephfsUsers the node plugin gets --cephfs-users, robin's API (the release's API Service)
    and the node token's Secret, read-only, at the file ROBIN_TOKEN_FILE names."""
    values = values_of("all-components-values.yaml")
    objects = manifests(values)
    node, plugin = _node_plugin(objects)
    assert "--cephfs-users" in plugin["command"]
    env = {e["name"]: e.get("value") for e in plugin["env"]}
    service = _only(objects, "Service", "api")
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "http")
    assert env["ROBIN_URL"] == f"http://{service['metadata']['name']}.{NAMESPACE}.svc:{port}"
    mount = next(m for m in plugin["volumeMounts"] if env["ROBIN_TOKEN_FILE"].startswith(m["mountPath"] + "/"))
    assert mount["readOnly"] is True
    secret = next(v for v in pod_spec(node)["volumes"] if v["name"] == mount["name"])["secret"]
    assert secret["secretName"] == values["csi"]["node"]["cephfsUsers"]["existingSecret"]
    key_path = env["ROBIN_TOKEN_FILE"][len(mount["mountPath"]) + 1:]
    assert secret["items"] == [{"key": "token", "path": key_path}]
    assert not [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == secret["secretName"]]


def test_cephfs_users_come_from_apiurl_when_it_is_set():
    values = values_of("custom-sidecars-values.yaml")
    node, plugin = _node_plugin(manifests(values))
    env = {e["name"]: e.get("value") for e in plugin["env"]}
    assert env["ROBIN_URL"] == values["apiUrl"]
    (volume,) = [v for v in pod_spec(node)["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "robin-csi-node"
    assert volume["secret"]["items"][0]["key"] == "node-token"


def test_the_csi_driver_is_the_one_robins_provisioner_names():
    from robin.kube.classes import CSI_DRIVER

    objects = manifests({})
    driver = next(o for o in objects if o["kind"] == "CSIDriver")
    assert driver["metadata"]["name"] == CSI_DRIVER
    assert driver["spec"]["attachRequired"] is False


def test_the_gateway_is_one_pinned_privileged_replica_replaced_not_rolled():
    values = values_of("all-components-values.yaml")
    objects = manifests(values)
    gateway = _only(objects, "Deployment", "gateway")
    assert gateway["spec"]["replicas"] == 1
    assert gateway["spec"]["strategy"]["type"] == "Recreate"
    assert pod_spec(gateway)["nodeSelector"] == values["gateway"]["nodeSelector"]
    assert pod_spec(gateway)["containers"][0]["securityContext"]["privileged"] is True
    service = _only(objects, "Service", "gateway")
    assert service["spec"]["ports"][0]["targetPort"] == "sftp"


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_sidecars_run_the_configured_images_and_robin_the_one_image(values_file):
    values = merged_values(values_of(values_file))
    objects = manifests(values_of(values_file))
    sidecars = {f"{s['image']['repository']}:{s['image']['tag']}" for s in values["csi"]["sidecars"].values()}
    robin = {id(c) for _, c in robin_containers(objects, values)}
    for _, container in containers(objects):
        assert id(container) in robin or container["image"] in sidecars, container["image"]


def test_secrets_come_from_existing_objects_by_name():
    values = values_of("existing-secrets-values.yaml")
    objects = manifests(values)
    assert not [o for o in objects if o["kind"] == "Secret"]
    referenced = set()
    for obj in objects:
        if obj["kind"] in ("Deployment", "DaemonSet", "Job"):
            for volume in pod_spec(obj).get("volumes", []):
                referenced.add(volume.get("secret", {}).get("secretName"))
                referenced.add(volume.get("configMap", {}).get("name"))
            for container in pod_spec(obj)["containers"]:
                for env in container.get("env", []):
                    referenced.add(env.get("valueFrom", {}).get("secretKeyRef", {}).get("name"))
    assert {"robin-db", "robin-ceph-keyring", "robin-keys", "robin-admin-token", "robin-ceph-conf"} <= referenced


def test_storage_classes_are_made_as_listed():
    values = values_of("all-components-values.yaml")
    classes = {o["metadata"]["name"]: o for o in manifests(values) if o["kind"] == "StorageClass"}
    assert set(classes) == {c["name"] for c in values["storageClasses"]}
    for wanted in values["storageClasses"]:
        made = classes[wanted["name"]]
        assert made["provisioner"] == wanted["provisioner"]
        assert made["parameters"] == {k: str(v) for k, v in wanted["parameters"].items()}


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_storage_classes_are_ones_their_provisioner_accepts(values_file):
    """robin's provisioner parses robin.io/* classes, the CSI plugin csi.robin.io ones: neither refuses them."""
    from csi_shim.parameters import Parameters
    from robin.kube.classes import KIND_BY_PROVISIONER, ClassConfig

    for storage_class in (o for o in manifests(values_of(values_file)) if o["kind"] == "StorageClass"):
        if storage_class["provisioner"] in KIND_BY_PROVISIONER:
            ClassConfig.parse(storage_class)
        else:
            Parameters.parse(storage_class.get("parameters", {}), default_project="kubernetes")


def test_service_monitor_scrapes_the_api_with_a_metrics_token():
    values = values_of("monitoring-values.yaml")
    objects = manifests(values)
    monitor = next(o for o in objects if o["kind"] == "ServiceMonitor")
    endpoints = {e["port"]: e for e in monitor["spec"]["endpoints"]}
    assert endpoints["http"]["path"] == "/metrics"
    assert endpoints["http"]["bearerTokenSecret"] == values["serviceMonitor"]["tokenSecret"]
    assert set(endpoints) == {"http", "metrics"}
    labels = monitor["spec"]["selector"]["matchLabels"]
    scraped = [o for o in objects if o["kind"] == "Service"
               and labels.items() <= o["metadata"]["labels"].items()]
    ports = {p["name"] for service in scraped for p in service["spec"]["ports"]}
    assert set(endpoints) <= ports
    assert set(monitor["spec"]) == {"namespaceSelector", "selector", "endpoints"}
    for endpoint in endpoints.values():
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "bearerTokenSecret"}


def test_the_packaged_chart_leaves_out_the_ci_values():
    assert "ci/" in Path(CHART / ".helmignore").read_text().split()


def test_one_install_registers_the_clients_token_after_migrating():
    """The provisioner and the CSI controller start with a token the database knows: the hook Job migrates
    (init container), then registers the chart's token, made first as a hook too."""
    objects = manifests(values_of("all-components-values.yaml"))
    spec = pod_spec(_only(objects, "Job", "db-upgrade"))
    assert [c["command"][:3] for c in spec["initContainers"]] == [["robin", "db", "upgrade"]]
    (register,) = spec["containers"]
    assert register["command"][:4] == ["robin", "token", "create", "--admin"]
    token_volume = next(v for v in spec["volumes"] if v["name"] == "api-token")["secret"]
    secret = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == token_volume["secretName"])
    assert "pre-install" in secret["metadata"]["annotations"]["helm.sh/hook"]
    provisioner = pod_spec(_only(objects, "Deployment", "provisioner"))
    assert token_volume["secretName"] in [v.get("secret", {}).get("secretName") for v in provisioner["volumes"]]


def test_without_registration_the_job_only_migrates():
    overrides = values_of("all-components-values.yaml")
    overrides["apiToken"] = {**overrides["apiToken"], "register": False}
    objects = manifests(overrides)
    spec = pod_spec(_only(objects, "Job", "db-upgrade"))
    assert "initContainers" not in spec and [c["name"] for c in spec["containers"]] == ["db-upgrade"]
    secret = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"].endswith("-api-token"))
    assert "helm.sh/hook" not in secret["metadata"].get("annotations", {})

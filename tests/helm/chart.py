"""The chart under test, rendered by real Helm (helm-python-sdk), and what the tests read from its manifests."""
from __future__ import annotations

from pathlib import Path

import helm_python as helm
import yaml

CHART = Path(__file__).resolve().parents[2] / "helm" / "robin"
RELEASE, NAMESPACE = "robin", "storage"
# The default values, then every chart-testing values file (helm/robin/ci/*-values.yaml).
VALUES_FILES = [None, *sorted(path.name for path in (CHART / "ci").glob("*-values.yaml"))]
WORKLOAD_KINDS = ("Deployment", "DaemonSet", "StatefulSet", "Job")


def values_of(name: str | None) -> dict:
    """A values file's overrides ({} for the defaults)."""
    return {} if name is None else yaml.safe_load((CHART / "ci" / name).read_text()) or {}


def merged_values(overrides: dict) -> dict:
    """What an install with `overrides` uses: the chart's defaults coalesced with them."""
    with helm.Chart.load(CHART) as chart:
        return chart.merge_values(overrides)


def render(overrides: dict) -> dict[str, str]:
    """{template path: rendered text}, as `helm template` would make them."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(overrides, name=RELEASE, namespace=NAMESPACE, is_install=True)


def manifests(overrides: dict) -> list[dict]:
    """Every object the chart renders (NOTES.txt is not one)."""
    objects = []
    for path, text in render(overrides).items():
        if path.endswith(".txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def containers(objects: list[dict]):
    """(workload, container) for every container of every workload."""
    for obj in objects:
        if obj["kind"] in WORKLOAD_KINDS:
            spec = pod_spec(obj)
            for container in spec.get("initContainers", []) + spec["containers"]:
                yield obj, container


def robin_image(values: dict) -> str:
    image = values["image"]
    return f"{image['repository']}:{image['tag'] or metadata()['appVersion']}"


def metadata() -> dict:
    """Chart.yaml, as Helm read it."""
    with helm.Chart.load(CHART) as chart:
        return chart.metadata


def robin_containers(objects: list[dict], values: dict):
    """(workload, container) of the containers that run robin's image (the others are Kubernetes sidecars)."""
    image = robin_image(values)
    return [(obj, c) for obj, c in containers(objects) if c["image"] == image]


def config_file(objects: list[dict]) -> str:
    """The robin.toml the chart's ConfigMap holds (every component's ROBIN_CONFIG_FILE)."""
    for obj in objects:
        if obj["kind"] == "ConfigMap" and "robin.toml" in obj.get("data", {}):
            return obj["data"]["robin.toml"]
    raise AssertionError("no ConfigMap holds robin.toml")

"""The example alert rules and Grafana dashboard in docs/monitoring/ parse (YAML and JSON, every PromQL expression
with a real PromQL parser) and name only metrics a real robin's /metrics serves, the quota forecast's included."""
from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, select

from robin.audit import forecast, history
from robin.audit.models import ProjectUsageSample
from robin.db import db, utcnow
from robin.projects.models import Project

pytestmark = pytest.mark.integration
MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring"
ALERTS, DASHBOARD = MONITORING / "robin-alerts.yml", MONITORING / "robin-dashboard.json"
# Grafana's variables, as a query would have them substituted.
GRAFANA_VARIABLES = {"$project": "p1|p2", "${datasource}": "prometheus", "$__rate_interval": "5m"}
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def metric_names(expression: str) -> set[str]:
    """The metrics an expression selects, from its syntax tree (a syntax error raises)."""
    names = set()
    promql_parser.walk(promql_parser.parse(expression),
                       lambda node: names.add(node.name) if isinstance(node, promql_parser.VectorSelector) else None)
    return names


def served_metrics(app, admin, new_project) -> set[str]:
    """The families and samples of a real scrape, once a project grows towards its quota."""
    project = new_project(max_bytes=10 * 2**30)
    now = utcnow()
    with app.app_context():
        with db.unit_of_work() as session:
            project_id = session.scalar(select(Project.id).where(Project.name == project))
            session.execute(insert(ProjectUsageSample), [
                {"project_id": project_id, "step": history.RAW, "at": now - timedelta(days=days),
                 "provisioned_bytes": (3 - days) * 2**30, "used_bytes": 0, "quota_bytes": 10 * 2**30, "volumes": 1}
                for days in (1, 2)])
        forecast.store(now)
    response = admin.get("/metrics")
    assert response.status_code == 200
    families = list(text_string_to_metric_families(response.get_data(as_text=True)))
    served = {family.name for family in families} | {sample.name for family in families for sample in family.samples}
    assert "robin_project_quota_exhaustion_seconds" in served
    return served


def assert_served(names: set[str], served: set[str]) -> None:
    for name in names:
        base = next((name[:-len(suffix)] for suffix in HISTOGRAM_SUFFIXES if name.endswith(suffix)), name)
        assert name in served or base in served, f"{name} is not a metric robin serves"


def test_the_alert_rules_parse_and_name_served_metrics(app, admin, new_project):
    rules = yaml.safe_load(ALERTS.read_text())
    served, named = served_metrics(app, admin, new_project), set()
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert all(group["name"] and group["rules"] for group in rules["groups"])
    for rule in alerts:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        named |= metric_names(rule["expr"])
        promql_parser.parse_duration(rule["for"])
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert_served(named, served)
    assert "robin_project_quota_exhaustion_seconds" in named
    assert len({rule["alert"] for rule in alerts}) == len(alerts)


def _substituted(expression: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    return expression


def test_the_dashboard_parses_and_names_served_metrics(app, admin, new_project):
    dashboard = json.loads(DASHBOARD.read_text())
    served, named = served_metrics(app, admin, new_project), set()
    targets = [target for panel in dashboard["panels"] for target in panel["targets"]]
    assert targets and all(panel["title"] and panel["gridPos"] for panel in dashboard["panels"])
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for target in targets:
        named |= metric_names(_substituted(target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(<metric>, <label>) is Grafana's, not PromQL
            named.add(re.fullmatch(r"label_values\((\w+), \w+\)", variable["query"]["query"]).group(1))
    assert_served(named, served)
    assert "robin_project_quota_exhaustion_seconds" in named

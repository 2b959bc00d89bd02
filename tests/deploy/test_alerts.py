"""The alerting rules and the dashboard, checked with the real promtool and a running operator.

- promtool accepts every rule file: the chart's files/prometheus-rules.yaml, its plain copy in
  deploy/prometheus, and the PrometheusRule the chart renders from it;
- the rules' unit tests (tests/deploy/alerts) pass, and fail when any metric the rules use is renamed;
- every input series of those tests, and every metric and grouping label the rules and the dashboard
  use, is what a running operator exports (a scrape of the integration world);
- every alert has a runbook section in docs/troubleshooting.md, which its runbook_url names.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from deploy.deploykit import CHART, ROOT, helm_template, one, run, tool

RULES = CHART / "files" / "prometheus-rules.yaml"
PLAIN_RULES = ROOT / "deploy" / "prometheus" / "cloudtriggers.rules.yaml"
DASHBOARD = CHART / "files" / "grafana-dashboard.json"
ALERT_TESTS = ROOT / "tests" / "deploy" / "alerts" / "cloudtriggers.rules_test.yaml"
TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"
SCRAPE_LABELS = {"job", "instance"}  # what a scrape adds to every series
DEFAULT_RUNBOOKS = "https://github.com/cloudtriggers/cloudtriggers/blob/main/docs/troubleshooting.md"
METRIC = re.compile(r"\bcloudtriggers_[a-z_]+\b")


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


# -- promtool ---------------------------------------------------------------------------------


def test_the_plain_rules_file_is_the_charts() -> None:
    assert PLAIN_RULES.read_bytes() == RULES.read_bytes()


def test_promtool_accepts_every_rule_file(tmp_path: Path) -> None:
    promtool = tool("promtool")
    for base in ("", "https://wiki.example.com/cloudtriggers"):
        values = {"enabled": True, **({"runbookBaseURL": base} if base else {})}
        rendered = one(helm_template({"prometheusRule": values}), "PrometheusRule")
        path = tmp_path / "rendered.yaml"
        path.write_text(yaml.safe_dump(rendered["spec"]))
        out = run(promtool, "check", "rules", str(RULES), str(PLAIN_RULES), str(path))
        assert out.count(f"SUCCESS: {len(rules())} rules found") == 3
        urls = {r["annotations"]["runbook_url"] for g in rendered["spec"]["groups"] for r in g["rules"]}
        assert all(
            u.startswith((base or "https://github.com/cloudtriggers/") + "#") or not base for u in urls
        )
        assert all(u.startswith(base or "https://github.com/cloudtriggers/") for u in urls)


def test_the_alert_unit_tests_pass() -> None:
    out = run(tool("promtool"), "test", "rules", str(ALERT_TESTS))
    assert "SUCCESS" in out


def _metrics_of(expr: str) -> set[str]:
    return set(METRIC.findall(expr))


@pytest.mark.parametrize("metric", sorted({m for r in rules() for m in _metrics_of(r["expr"])}))
def test_the_alert_unit_tests_fail_when_a_metric_is_renamed(metric: str, tmp_path: Path) -> None:
    """A renamed metric (in the operator, so in what it exports) no longer matches the rules."""
    renamed = tmp_path / "renamed.rules.yaml"
    renamed.write_text(
        RULES.read_text().replace(metric, metric.replace("cloudtriggers_", "cloudtriggers_old_"))
    )
    tests = tmp_path / "tests.yaml"
    spec = yaml.safe_load(ALERT_TESTS.read_text())
    spec["rule_files"] = [str(renamed)]
    tests.write_text(yaml.safe_dump(spec))
    proc = subprocess.run(
        [tool("promtool"), "test", "rules", str(tests)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0, f"the alert tests still pass with {metric} renamed"


def test_every_alert_is_tested_firing() -> None:
    spec = yaml.safe_load(ALERT_TESTS.read_text())
    fired = {t["alertname"] for case in spec["tests"] for t in case["alert_rule_test"] if t.get("exp_alerts")}
    assert fired == {r["alert"] for r in rules()}


def test_every_alert_links_its_runbook_section() -> None:
    headings = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in TROUBLESHOOTING.read_text().splitlines()
        if line.startswith("#")
    }
    for r in rules():
        anchor = r["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor == f"alert-{r['alert'].lower()}"
        assert anchor in headings, f"docs/troubleshooting.md has no section '### Alert: {r['alert']}'"
        for key in ("summary", "description"):
            assert r["annotations"].get(key), f"{r['alert']} has no {key}"


# -- what a running operator exports ------------------------------------------------------------


@pytest.fixture(scope="module")
def scrape() -> Iterator[dict[str, set[str]]]:
    """Metric name -> label names, from /metrics of the operator running against the sandboxes: a
    Ready GitLab Trigger and one waiting for its credentials. Families with no sample yet (counters
    of rare events) take their label names from the metric objects the operator registers."""
    from cloudtriggers import metrics
    from cloudtriggers.sandbox.gitlab import MAINTAINER
    from cloudtriggers.sandbox.local import LocalWorld, condition, wait_for
    from cloudtriggers.settings import Settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with LocalWorld(Settings(http_port=port, credentials_poll=0.5)) as world:
        user = world.gitlab.add_user("bot")
        world.gitlab.add_project("group/web", {"bot": MAINTAINER})
        world.apply_secret("apps", "gl", {"token": user.token})
        world.start_operator()
        for name, secret in (("web", "gl"), ("waiting", "absent")):
            world.create_trigger(
                {
                    "apiVersion": "cloudtriggers.io/v1alpha1",
                    "kind": "Trigger",
                    "metadata": {"name": name, "namespace": "apps"},
                    "spec": {
                        "gitlab": {"url": world.gitlab.url, "project": "group/web"},
                        "credentialsSecretRef": {"name": secret},
                    },
                }
            )
        wait_for(lambda: condition(world.trigger("apps", "web")).get("reason") == "Available", what="Ready")
        wait_for(lambda: condition(world.trigger("apps", "waiting")).get("reason") == "CredentialsMissing")
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    exported: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(sample.labels)
        exported.setdefault(family.name + ("_total" if family.type == "counter" else ""), set())
    declared = {
        m._name: set(m._labelnames)
        for m in vars(metrics).values()
        if hasattr(m, "_labelnames") and hasattr(m, "_name")
    }
    for name, labels in declared.items():
        for full in (name, f"{name}_total"):
            if full in exported and not exported[full]:
                exported[full] = labels
    assert "cloudtriggers_trigger_not_ready_since_timestamp_seconds" in text, (
        "the waiting Trigger is not in it"
    )
    yield exported


def _series_labels(series: str) -> tuple[str, set[str]]:
    m = re.fullmatch(r"(\w+)\{(.*)\}", series.strip())
    assert m, series
    return m.group(1), set(re.findall(r"(\w+)=", m.group(2)))


def test_the_alert_tests_feed_series_shaped_like_the_operators(scrape: dict[str, set[str]]) -> None:
    spec = yaml.safe_load(ALERT_TESTS.read_text())
    for case in spec["tests"]:
        for s in case["input_series"]:
            name, labels = _series_labels(s["series"])
            if name == "up":
                continue  # Prometheus' own
            assert name in scrape, f"{name}: the operator exports no such metric"
            assert labels - SCRAPE_LABELS == scrape[name], (
                f"{name}: labels {sorted(labels)} vs {sorted(scrape[name])}"
            )


@pytest.mark.parametrize("where", ["rules", "dashboard"])
def test_queries_use_only_what_the_operator_exports(scrape: dict[str, set[str]], where: str) -> None:
    exprs = [r["expr"] for r in rules()] if where == "rules" else dashboard_exprs()
    assert exprs
    for expr in exprs:
        names = _metrics_of(expr)
        assert names, expr
        labels = set(SCRAPE_LABELS) | {"le"}
        for name in names:
            assert name in scrape, f"{where}: {name} is not exported ({expr})"
            labels |= scrape[name]
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            used = {x.strip() for x in group.split(",") if x.strip()}
            assert used <= labels, (
                f"{where}: grouping by {sorted(used - labels)}, which no metric has ({expr})"
            )


def test_the_dashboard_is_a_grafana_dashboard_in_a_sidecar_configmap() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "cloudtriggers" and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
    assert not [o for o in helm_template({}) if o["kind"] == "ConfigMap"]
    cm = one(helm_template({"grafanaDashboard": {"enabled": True}}), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["cloudtriggers.json"]) == dash

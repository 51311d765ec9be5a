"""The chart's dashboard and alerts, against a real Prometheus.

- `promtool check rules` on the rule file and on the rendered PrometheusRule;
  `promtool test rules` on tests/chart/prometheus-rules.test.yaml, which
  must hold a firing and a not-firing case for every alert.
- End to end: the demo (the real operator in local mode, eight real
  sidecars, traffic through the fake provider) is scraped every second by a
  real Prometheus on 127.0.0.1, which also loads the rules. Then every
  PromQL expression of the dashboard (variables substituted with the values
  found in the data) and of the rules is evaluated over the HTTP API and
  must return data; the rules must evaluate without error; the alerts the
  demo's state calls for must be active and no other.
- The PodMonitor's relabelings name workloads as the sidecar does, checked
  by Prometheus itself on targets with the pod metadata Kubernetes gives.

Alert expressions are comparisons (empty while not firing). Each compares
its signal with a number literal, so the test removes every `<op> <number>`
and evaluates what is left: the signal must have data, firing or not.

Needs /usr/bin/prometheus and /usr/bin/promtool (Debian's `prometheus`):
skipped without them, failed when TOKENWARDEN_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from chartlib import CHART, ROOT, objects, operator_bin
from pgserver import postgres, server_bin_dir

RULES = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"
RULE_TESTS = Path(__file__).resolve().parent / "prometheus-rules.test.yaml"
OBSERVABILITY = ROOT / "docs" / "observability.md"

# The demo's state when its traffic is done: its token budget shared by the
# summarizer pods is exhausted; the control plane is healthy.
EXPECTED_ACTIVE = {
    ("TokenwardenBudgetExhausted", "research/summarizer-tokens"),
    ("TokenwardenBudgetThresholdCrossed", "research/summarizer-tokens"),
}
NEVER_ACTIVE_IN_DEMO = {
    "TokenwardenConfigRejected",
    "TokenwardenSidecarDisconnected",
    "TokenwardenNoLeader",
    "TokenwardenLedgerWritesFailing",
    "TokenwardenLedgerLagging",
    "TokenwardenUsageUnacked",
    "TokenwardenSidecarLedgerUnwritable",
    "TokenwardenUsageStoreBacklog",
    "TokenwardenUsageStoreDown",
}

COMPARISON = re.compile(r"\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?![0-9a-zA-Z_])")
METRIC = re.compile(r"\btokenwarden_[a-z0-9_]+\b")


def tool(name: str) -> str:
    """The path of a Prometheus tool, else skip (fail under TOKENWARDEN_REQUIRE_SERVICES=1)."""
    path = shutil.which(name)
    if path:
        return path
    msg = f"{name} is not installed (Debian: apt-get install prometheus)"
    if os.environ.get("TOKENWARDEN_REQUIRE_SERVICES") == "1":
        pytest.fail(msg + "; TOKENWARDEN_REQUIRE_SERVICES=1 requires it")
    pytest.skip(msg)


def rule_groups() -> list[dict]:
    return yaml.safe_load(RULES.read_text())["groups"]


def alerts() -> list[dict]:
    return [r for g in rule_groups() for r in g["rules"] if "alert" in r]


def signal(expr: str) -> str:
    """An alert's expression without its threshold comparisons."""
    return COMPARISON.sub("", expr)


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, expression) of every query of every panel."""
    out = []
    for p in dashboard()["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    return out


# --- static checks -----------------------------------------------------------


def test_promtool_check_rules(tmp_path: Path) -> None:
    promtool = tool("promtool")
    # The source file, and the groups the chart puts in its PrometheusRule.
    rendered = [d for d in objects({"prometheusRule": {"enabled": True}}) if d["kind"] == "PrometheusRule"]
    assert len(rendered) == 1
    spec = tmp_path / "rendered-rules.yaml"
    spec.write_text(yaml.safe_dump(rendered[0]["spec"]))
    out = subprocess.run([promtool, "check", "rules", str(RULES), str(spec)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count(f"SUCCESS: {len([r for g in rule_groups() for r in g['rules']])} rules found") == 2, out.stdout


def test_promtool_rule_unit_tests() -> None:
    promtool = tool("promtool")
    out = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout, out.stdout


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing, quiet = set(), set()
    for case in cases:
        for t in case.get("alert_rule_test", []):
            (firing if t.get("exp_alerts") else quiet).add(t["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - firing == set(), f"alerts never tested firing: {sorted(names - firing)}"
    assert names - quiet == set(), f"alerts never tested quiet: {sorted(names - quiet)}"


def test_every_alert_has_severity_annotations_and_a_runbook() -> None:
    doc = OBSERVABILITY.read_text()
    headings = {h.strip().lower() for h in re.findall(r"^#### (\S+)$", doc, flags=re.M)}
    for a in alerts():
        name = a["alert"]
        assert name.startswith("Tokenwarden"), name
        assert a["labels"]["severity"] in {"critical", "warning", "info"}, name
        ann = a["annotations"]
        assert ann["summary"] and ann["description"], name
        base, anchor = ann["runbook_url"].split("#")
        assert base == "https://github.com/tokenwarden/tokenwarden/blob/main/docs/observability.md", name
        assert anchor == name.lower(), name
        assert anchor in headings, f"docs/observability.md has no runbook heading '#### {name}'"
        # The end-to-end test evaluates the signal without its threshold.
        assert signal(a["expr"]) != a["expr"], f"{name}: no comparison with a number"


def test_dashboard_variables_and_datasource() -> None:
    d = dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "workload"):
        v = variables[name]
        assert v["type"] == "query" and v["multi"] and v["includeAll"], name
        # No custom "All" value: Grafana sends every value found, as the test does.
        assert "allValue" not in v, name
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            # Sidecar series are filtered by the variables; operator series have no workload.
            if "tokenwarden_operator_" not in t["expr"] and "tokenwarden_usage_store_" not in t["expr"]:
                assert 'namespace=~"$namespace"' in t["expr"], (p["title"], t["expr"])
    titles = " ".join(p["title"] for p in d["panels"]).lower()
    for topic in ("spend", "budget", "forecast", "routing", "cache", "errors", "latency added", "sidecars connected",
                  "config pushes", "ledger", "lease", "usage store"):
        assert topic in titles, topic


def test_chart_ships_the_files_unchanged() -> None:
    docs = objects({"grafanaDashboard": {"enabled": True}, "prometheusRule": {"enabled": True}})
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert json.loads(cm["data"]["tokenwarden.json"]) == dashboard()
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["spec"] == {"groups": rule_groups()}


# --- end to end ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PromError(Exception):
    """Prometheus refused a request (a query it cannot parse or evaluate)."""


class Prom:
    """A Prometheus on 127.0.0.1 over its HTTP API."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.started = time.time()

    def intervals(self) -> dict[str, str]:
        """Grafana's interval variables as a dashboard over the whole run
        has them: every range covers the demo's traffic, however slow the
        machine ran it (at least a minute, as $__rate_interval would be)."""
        run = f"{max(60, math.ceil(time.time() - self.started) + 5)}s"
        return {"$__rate_interval": run, "$__range": run, "$__interval": "1s"}

    def get(self, path: str, **params) -> dict:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            raise PromError(f"{path} {params}: {e.code} {e.read().decode(errors='replace')}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list:
        """The expression's samples now (a scalar is one sample)."""
        data = self.get("/api/v1/query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False


def wait_for(what: str, cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def relabel_config(rules: list[dict]) -> list[dict]:
    """The PodMonitor's relabelings (camelCase) as Prometheus relabel_configs."""
    keys = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    return [{keys.get(k, k): v for k, v in r.items()} for r in rules]


# Pods as Kubernetes describes them to Prometheus, and the workload the
# sidecar names for each (core::workload::workload_name).
RELABEL_CASES = [
    ({"__meta_kubernetes_pod_name": "cart-7d9f8-x2x4p", "__meta_kubernetes_pod_label_pod_template_hash": "7d9f8",
      "__meta_kubernetes_pod_label_app_kubernetes_io_name": "cart-api", "__meta_kubernetes_pod_label_app": "cart"}, "cart-api"),
    ({"__meta_kubernetes_pod_name": "cart-7d9f8-x2x4p", "__meta_kubernetes_pod_label_pod_template_hash": "7d9f8",
      "__meta_kubernetes_pod_label_app": "cart", "__meta_kubernetes_pod_label_tokenwarden_dev_workload": "w"}, "cart"),
    ({"__meta_kubernetes_pod_name": "batch-1", "__meta_kubernetes_pod_label_tokenwarden_dev_workload": "nightly"}, "nightly"),
    ({"__meta_kubernetes_pod_name": "search-agent-5c4b9-k8s7q", "__meta_kubernetes_pod_label_pod_template_hash": "5c4b9"},
     "search-agent"),
    ({"__meta_kubernetes_pod_name": "one-off-pod"}, "one-off-pod"),
    ({"__meta_kubernetes_pod_name": "db-0", "__meta_kubernetes_pod_label_app_kubernetes_io_name": ""}, "db-0"),
]


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """The demo scraped by Prometheus (with the rules loaded): a `Prom`."""
    prometheus = tool("prometheus")
    pg_bin = server_bin_dir()
    if pg_bin is None:
        # The usage store's panels and alerts need its metrics, which an
        # operator exports only with a store configured.
        msg = "PostgreSQL server binaries not found (Debian: apt-get install postgresql-15)"
        if os.environ.get("TOKENWARDEN_REQUIRE_SERVICES") == "1":
            pytest.fail(msg + "; TOKENWARDEN_REQUIRE_SERVICES=1 requires them")
        pytest.skip(msg)
    demo = operator_bin().with_name("tokenwarden-demo")
    for b in ("tokenwarden-demo", "tokenwarden-operator", "tokenwarden-sidecar", "kubectl-tokenwarden"):
        if not demo.with_name(b).exists():
            pytest.fail(f"{demo.with_name(b)} missing: build it with `cargo build -p tokenwarden-demo "
                        "-p tokenwarden-operator -p tokenwarden-sidecar -p tokenwarden-cli`")
    tmp = tmp_path_factory.mktemp("prometheus")
    targets = tmp / "targets.json"
    (pod_monitor,) = [d for d in objects({"podMonitor": {"enabled": True}}) if d["kind"] == "PodMonitor"]
    relabelings = relabel_config(pod_monitor["spec"]["podMetricsEndpoints"][0]["relabelings"])
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "tokenwarden-demo", "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}]},
            # Nothing listens on these loopback ports: the targets exist for their labels.
            {"job_name": "relabel-check", "scrape_interval": "1h",
             "static_configs": [{"targets": [f"127.0.0.1:9{i:02d}"], "labels": meta}
                                for i, (meta, _) in enumerate(RELABEL_CASES)],
             "relabel_configs": relabelings},
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    prom_log = open(tmp / "prometheus.log", "w")
    demo_err = open(tmp / "demo.stderr", "w")
    prom_proc = subprocess.Popen(
        [prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=prom_log, stderr=subprocess.STDOUT)
    demo_proc = None
    usage_store = contextlib.ExitStack()
    try:
        # The demo's operator writes its usage to a real PostgreSQL, so the
        # usage store's metrics are scraped like every other.
        store_url = usage_store.enter_context(postgres(pg_bin))
        prom = Prom(port)
        wait_for("Prometheus to be ready", prom.ready, 60)
        env = dict(os.environ, TOKENWARDEN_DEMO_SCRAPE_TARGETS=str(targets),
                   TOKENWARDEN_OPERATOR_USAGE_STORE_URL=store_url)
        demo_proc = subprocess.Popen([str(demo)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=demo_err,
                                     text=True, env=env)
        lines: list[str] = []
        holding = threading.Event()

        def read() -> None:
            for line in demo_proc.stdout:
                lines.append(line)
                if line.startswith("holding the processes"):
                    holding.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 300
        while not holding.wait(0.5):
            if demo_proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the demo did not finish its traffic (exit {demo_proc.poll()}):\n" + "".join(lines)
                            + (tmp / "demo.stderr").read_text())
        apps = dict(re.findall(r"^pod (\S+) app (\S+)$", "".join(lines), flags=re.M))
        # The demo's agents never retry a prompt: the coding agent does once
        # here, which its policy escalates one tier up (repeatedPrompt).
        coding_agent = next(addr for pod, addr in apps.items() if pod.startswith("agents/coding-agent-"))
        for _ in range(2):
            status, _ = post_messages(coding_agent, REPEATED_PROMPT)
            assert status == 200
        # Every target up, then the settled state scraped and the rules evaluated on it.
        wait_for("the operator and 8 sidecars scraped",
                 lambda: len(prom.query('up{job=~"tokenwarden-(operator|sidecar)"} == 1')) == 9, 60)
        settled = time.time() + 3
        wait_for("scrapes and rule evaluations after the traffic", lambda: all(
            r.get("lastEvaluation", "") and parse_time(r["lastEvaluation"]) > settled
            for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]), 60)
        yield prom
    finally:
        if demo_proc is not None:
            # Closing stdin ends the demo, which stops its operator and sidecars.
            try:
                demo_proc.stdin.close()
                demo_proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                demo_proc.kill()
        prom_proc.terminate()
        try:
            prom_proc.wait(30)
        except subprocess.TimeoutExpired:
            prom_proc.kill()
        prom_log.close()
        demo_err.close()
        usage_store.close()


# A request the demo's coding agent sends twice (an Anthropic Messages call
# for its flagship, which the policy routes to a cheaper tier).
REPEATED_PROMPT = {"model": "claude-opus-4-1", "max_tokens": 64,
                   "messages": [{"role": "user", "content": "Rename the variable x to count in this function."}]}


def post_messages(addr: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://{addr}/v1/messages", data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", "anthropic-version": "2023-06-01"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.load(r)


def parse_time(rfc3339: str) -> float:
    """Seconds since the epoch of Prometheus's RFC 3339 timestamps (nanoseconds cut)."""
    from datetime import datetime

    s = re.sub(r"(\.\d{6})\d*", r"\1", rfc3339).replace("Z", "+00:00")
    return datetime.fromisoformat(s).timestamp()


def substitute_variables(prom: Prom) -> dict[str, str]:
    """Each dashboard variable as Grafana sends it with every value found in
    the data selected (a regex alternation), in dashboard order."""
    values: dict[str, str] = {}
    for v in dashboard()["templating"]["list"]:
        if v["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", v["query"]["query"])
        assert m, v["query"]
        selector = expand(m.group(1), values, prom.intervals())
        found = prom.get(f"/api/v1/label/{m.group(2)}/values", **{"match[]": selector})
        assert found, f"variable ${v['name']}: no values for {selector}"
        values["$" + v["name"]] = "(" + "|".join(grafana_regex_escape(x) for x in found) + ")"
    return values


def grafana_regex_escape(value: str) -> str:
    """A variable's value as Grafana puts it in a Prometheus regex matcher
    (its prometheusRegularEscape: regex metacharacters escaped, the
    backslash doubled for the PromQL string)."""
    value = value.replace("\\", "\\\\\\\\")
    return re.sub(r"([$^*{}\[\]'+?.()|])", r"\\\\\1", value)


def expand(expr: str, variables: dict[str, str], intervals: dict[str, str]) -> str:
    for name, value in {**intervals, **variables}.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def absent_metrics(prom: Prom, expr: str) -> list[str]:
    names = set(prom.get("/api/v1/label/__name__/values"))
    return sorted({m for m in METRIC.findall(expr) if not any(n == m or n.startswith(m + "_") for n in names)})


def check_returns_data(prom: Prom, exprs: list[tuple[str, str]]) -> list[str]:
    """Evaluate each (where, expr); return what failed, as readable lines."""
    failed = []
    for where, expr in exprs:
        try:
            result = prom.query(expr)
        except PromError as e:
            failed.append(f"{where}: {expr}\n    -> {e}")
            continue
        numbers = [float(s["value"][1]) for s in result]
        if result and not all(math.isnan(n) for n in numbers):
            continue
        missing = absent_metrics(prom, expr)
        why = f"absent from every target: {missing}" if missing else ("NaN" if result else "empty")
        failed.append(f"{where}: {expr}\n    -> {why}")
    return failed


def test_every_dashboard_expression_returns_data(scraped: Prom) -> None:
    variables = substitute_variables(scraped)
    intervals = scraped.intervals()
    exprs = [(f"panel {title!r}", expand(e, variables, intervals)) for title, e in dashboard_exprs()]
    assert len(exprs) >= 40
    failed = check_returns_data(scraped, exprs)
    assert failed == [], f"{len(failed)} of {len(exprs)} dashboard expressions returned no data:\n" + "\n".join(failed)


def test_every_alert_signal_returns_data(scraped: Prom) -> None:
    exprs = [(f"alert {a['alert']} (threshold removed)", signal(a["expr"])) for a in alerts()]
    failed = check_returns_data(scraped, exprs)
    assert failed == [], "alert signals without data:\n" + "\n".join(failed)


def test_rules_evaluate_and_the_demo_state_fires_what_it_should(scraped: Prom) -> None:
    for g in scraped.get("/api/v1/rules")["groups"]:
        for r in g["rules"]:
            assert r["health"] == "ok", (r["name"], r.get("lastError"))
    active = {(a["labels"]["alertname"], a["labels"].get("budget", "")) for a in scraped.get("/api/v1/alerts")["alerts"]}
    assert EXPECTED_ACTIVE <= active, active
    assert {name for name, _ in active} & NEVER_ACTIVE_IN_DEMO == set(), active


def test_pod_monitor_relabelings_name_workloads_as_the_sidecar(scraped: Prom) -> None:
    got = {}
    for t in scraped.get("/api/v1/targets", state="any")["activeTargets"]:
        if t["labels"]["job"] == "relabel-check":
            got[t["discoveredLabels"]["__address__"]] = t["labels"].get("workload")
    want = {f"127.0.0.1:9{i:02d}": w for i, (_, w) in enumerate(RELABEL_CASES)}
    assert got == want

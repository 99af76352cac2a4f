"""The metric names a PromQL expression uses, the expressions of the
shipped alert rules and Grafana dashboard, and the sample names a
Prometheus text exposition holds: enough to check that every metric the
rules and dashboards name exists (no PromQL or YAML library needed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "tailrace.json"

# words of the language, not metrics
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
            "bool", "offset", "inf", "nan"}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.$])([A-Za-z_:][\w:]*)(\s*\()?")
_LABEL_VALUES = re.compile(r"^label_values\((.*),\s*\w+\s*\)$")


def metric_names(expr: str) -> set[str]:
    """Every metric name `expr` selects: identifiers that are neither a
    function call, a keyword, a label (inside braces or a grouping) nor a
    duration."""
    m = _LABEL_VALUES.match(expr.strip())  # a Grafana variable's query
    if m:
        expr = m.group(1)
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    return {name for name, call in _IDENT.findall(text) if not call and name.lower() not in KEYWORDS}


def alert_rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    """The rules of a rule file written as ours is: `- alert: NAME`, then
    `expr:` on one line or as a `|` block, `for:`, `severity:`,
    `summary:` (a reader for this file's shape, not for YAML at large)."""
    rules: list[dict[str, Any]] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("- alert:"):
            rules.append({"alert": stripped.split(":", 1)[1].strip()})
        elif rules and stripped.startswith("expr:"):
            value = stripped.split(":", 1)[1].strip()
            if value in ("|", ">", "|-", ">-"):
                indent = len(line) - len(line.lstrip())
                block = []
                while i + 1 < len(lines) and (
                    not lines[i + 1].strip() or len(lines[i + 1]) - len(lines[i + 1].lstrip()) > indent
                ):
                    i += 1
                    block.append(lines[i].strip())
                value = " ".join(b for b in block if b)
            rules[-1]["expr"] = value
        elif rules and ":" in stripped and not stripped.startswith("#"):
            key, _, value = stripped.partition(":")
            if key in ("for", "severity", "summary", "description"):
                rules[-1][key] = value.strip()
        i += 1
    return rules


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))


def dashboard_exprs(path: Path = DASHBOARD) -> dict[str, str]:
    """Where -> expression, for every panel target and query variable."""
    dash = json.loads(path.read_text())
    out = {}
    for p in _panels(dash["panels"]):
        for t in p.get("targets", []):
            out[f"panel {p['title']!r} {t['refId']}"] = t["expr"]
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out[f"variable {v['name']}"] = q
    return out


def exposed_samples(text: str) -> set[str]:
    """The sample names a Prometheus text exposition can hold, from its
    `# TYPE` lines (a family is listed even before its first sample):
    counters as NAME_total, histograms as NAME_bucket / _sum / _count."""
    names: set[str] = set()
    for line in text.splitlines():
        if not line.startswith("# TYPE "):
            continue
        _, _, name, kind = line.split(maxsplit=3)
        if kind == "counter":
            name = name.removesuffix("_total")  # newer clients name the family with it
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"),
        }.get(kind, ("",))
        names.update(name + s for s in suffixes)
    return names


def unknown_metrics(exprs: dict[str, str], known: set[str]) -> dict[str, set[str]]:
    """where -> the names its expression uses that `known` lacks (empty when all exist)."""
    return {where: missing for where, e in exprs.items() if (missing := metric_names(e) - known)}


def without_annotations(rules_text: str) -> str:
    """A rule file written as ours is, without its `annotations:` blocks
    (promtool's unit tests compare rendered annotations; ours test firing)."""
    out: list[str] = []
    skip_deeper: int | None = None
    for line in rules_text.splitlines():
        indent = len(line) - len(line.lstrip())
        if skip_deeper is not None:
            if not line.strip() or indent > skip_deeper:
                continue
            skip_deeper = None
        if line.strip() == "annotations:":
            skip_deeper = indent
            continue
        out.append(line)
    return "\n".join(out) + "\n"


TARGET_LABELS = {"instance", "job"}  # added by Prometheus to every scraped series
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)\s*\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUP_LABELS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_TEMPLATE_LABEL = re.compile(r"\$labels\.(\w+)")


def selector_labels(expr: str) -> dict[str, set[str]]:
    """metric -> the labels its selectors match on (`m{a="x", b=~"y"}`)."""
    out: dict[str, set[str]] = {}
    for name, body in _SELECTOR.findall(_STRING.sub('""', expr)):
        out.setdefault(name, set()).update(_MATCHER_LABEL.findall(body))
    return out


def grouping_labels(expr: str) -> set[str]:
    """Labels named in `by`, `without`, `on`, `ignoring`, `group_left/right`."""
    return {
        lab.strip() for _kw, labs in _GROUP_LABELS.findall(expr) for lab in labs.split(",") if lab.strip()
    }


def template_labels(text: str) -> set[str]:
    return set(_TEMPLATE_LABEL.findall(text))


def label_problems(expr: str, labels: dict[str, set[str]], templates: str = "") -> list[str]:
    """What in `expr` names a label no metric it uses has: a selector's
    matcher on a metric without that label, a grouping label none of its
    metrics carries, an alert template's `$labels.X` likewise. `labels`:
    metric -> its label names (the target labels are added here)."""
    problems = []
    used = metric_names(expr)
    for metric, matched in selector_labels(expr).items():
        extra = matched - labels.get(metric, set()) - TARGET_LABELS
        if extra:
            problems.append(f"{metric} has no label {sorted(extra)}")
    carried = set().union(*(labels.get(m, set()) for m in used)) | TARGET_LABELS
    for lab in sorted(grouping_labels(expr) - carried):
        problems.append(f"grouping on {lab!r}, which none of {sorted(used)} has")
    for lab in sorted(template_labels(templates) - carried - {"alertname", "severity"}):
        problems.append(f"template names $labels.{lab}, which none of {sorted(used)} has")
    return problems

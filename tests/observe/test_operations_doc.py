"""docs/operations.md stays true: its alert rules are valid YAML naming metrics the service
serves, and the commands it shows exist."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from freshsales_destination.observe import metrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _served_names() -> set[str]:
    names = {f"{m.name}_total" if m.type == "counter" else m.name
             for m in metrics.PROCESS.collect()}
    source = Path(metrics.__file__).read_text(encoding="utf-8")
    names |= {f"{metrics.PREFIX}{suffix}" for suffix in re.findall(r'f"\{PREFIX\}(_\w+)"', source)}
    return names


def test_alert_rules_are_yaml_and_name_served_metrics() -> None:
    text = DOC.read_text(encoding="utf-8")
    [block] = re.findall(r"```yaml\n(.*?)```", text, re.S)
    rules = yaml.safe_load(block)["groups"][0]["rules"]
    assert {"FreshsalesDeliveryFallingBehind", "FreshsalesDeadLetters",
            "FreshsalesDestinationUnhealthy", "FreshsalesBudgetExhausted"} <= {
        r["alert"] for r in rules}
    served = _served_names()
    for rule in rules:
        used = set(re.findall(r"freshsales_destination_\w+", rule["expr"]))
        assert used and used <= served, (rule["alert"], used - served)


def test_documented_metrics_are_served() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Metrics and alerts", 1)[1].split("## Logs", 1)[0]
    table = section.split("**Example alerts**", 1)[0]
    documented = set(re.findall(r"`(freshsales_destination_\w+)`", table))
    served = _served_names()
    assert documented and documented <= served, documented - served

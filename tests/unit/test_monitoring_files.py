"""The Grafana dashboard and the monitoring compose file: parsed, pinned, and every vlm_* series a panel
queries is one the generator exports (a renamed metric would otherwise leave a panel silently empty)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from minivlm.serving import metrics

DOCKER = Path(__file__).resolve().parents[2] / "docker"
EXPORTED = set(re.findall(r"`(vlm_\w+)`", metrics.__doc__))
SUFFIXES = ("_bucket", "_count", "_sum")


def test_every_panel_queries_exported_series():
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "vlm.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\b(vlm_\w+)", expr)}
    for name in used:
        base = next((name[: -len(s)] for s in SUFFIXES if name.endswith(s)), name)
        assert base in EXPORTED, f"{name} is not exported by minivlm/serving/metrics.py"
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for wanted in ("throughput", "first token", "tokens", "queue", "routing", "errors"):
        assert wanted in titles


def test_compose_images_are_pinned_and_provisioning_points_at_the_dashboards():
    compose = yaml.safe_load((DOCKER / "monitoring.compose.yaml").read_text())
    for service in compose["services"].values():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), image
    provider = yaml.safe_load((DOCKER / "grafana" / "provisioning" / "dashboards" / "vlm.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert any(m.endswith(provider["providers"][0]["options"]["path"] + ":ro") for m in mounts)
    scrape = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["host.docker.internal:8002"]

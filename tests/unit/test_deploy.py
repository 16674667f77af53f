"""docker-compose.yml and deploy/k8s, checked offline against the Compose spec and Kubernetes'
own schemas, and against what the services need (ports, probes, the embedder's HPA and GPU)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.kustomize import render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30"
PORTS = {"embedder": 8001, "filter": 8002, "dedup": 8003, "captioner": 8004, "gateway": 8000}


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def test_compose_file_follows_the_compose_spec() -> None:
    schema_text = (
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text()
    )
    jsonschema.validate(compose(), json.loads(schema_text))


def test_compose_runs_every_part_with_health_checks() -> None:
    services = compose()["services"]
    assert set(services) >= {
        "redis",
        "minio",
        "qdrant",
        "postgres",
        *PORTS,
        "worker",
        "embedder-gpu",
    }
    assert all("healthcheck" in s for s in services.values())
    for name, port in PORTS.items():
        assert f"127.0.0.1:{port}/readyz" in " ".join(services[name]["healthcheck"]["test"])
    assert services["worker"]["healthcheck"]["test"] == ["CMD", "seavl", "worker", "--check"]
    captions = services["caption-worker"]
    assert captions["command"] == ["seavl", "worker", "--captions"]
    assert captions["healthcheck"]["test"] == ["CMD", "seavl", "worker", "--captions", "--check"]
    assert services["dedup"]["environment"]["QDRANT_URL"] == "http://qdrant:6333"
    assert services["gateway"]["environment"]["REDIS_URL"].startswith("redis://redis:6379")
    gateway_env = services["gateway"]["environment"]
    assert gateway_env["SEAVL_GATEWAY_CAPTIONER__URL"] == "http://captioner:8004"
    assert services["worker"]["environment"] == gateway_env  # workers ask for the captions
    devices = services["embedder-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


@pytest.mark.parametrize("overlay", ["base", "overlays/gpu"])
def test_k8s_manifests_are_valid_kubernetes(overlay: str) -> None:
    rendered = render(K8S / overlay)
    for resource in rendered:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    secret_template = yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())
    kubernetes_validate.validate(secret_template, KUBERNETES_VERSION, strict=True)


def by_kind(rendered: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in rendered if r["kind"] == kind}


def test_k8s_base_has_each_service_with_probes_and_resources() -> None:
    rendered = render(K8S / "base")
    deployments, services = by_kind(rendered, "Deployment"), by_kind(rendered, "Service")
    assert set(deployments) == {*PORTS, "worker", "caption-worker"}
    assert set(services) == set(PORTS)
    caption_worker = deployments["caption-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert caption_worker["command"] == ["seavl", "worker", "--captions"]
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        image = "worker" if name == "caption-worker" else name
        assert container["image"] == f"seavl/{image}:0.1.0"
        assert container["readinessProbe"] and container["livenessProbe"]
        assert container["resources"]["requests"]["cpu"]
        assert {"configMapRef": {"name": "seavl-config"}} in container["envFrom"]
        assert deployment["metadata"]["namespace"] == "seavl"
        if name in PORTS:
            assert container["ports"][0]["containerPort"] == PORTS[name]
            assert services[name]["spec"]["ports"][0]["port"] == PORTS[name]
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    hpa = by_kind(rendered, "HorizontalPodAutoscaler")["embedder"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "embedder" and hpa["spec"]["maxReplicas"] > 2


def test_gpu_overlay_puts_the_embedder_on_gpu_nodes() -> None:
    embedder = by_kind(render(K8S / "overlays" / "gpu"), "Deployment")["embedder"]
    pod = embedder["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["cpu"] == "1"  # the base survives the patch
    assert container["image"] == "seavl/embedder:0.1.0-gpu"
    assert {"name": "SEAVL_EMBEDDER_RUNTIME__REQUIRE_GPU", "value": "true"} in container["env"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"

"""docker-compose.yml and deploy/k8s, checked offline against the Compose spec and Kubernetes'
own schemas, and against what the services need (ports, probes, the embedder's HPA and GPU)."""

from __future__ import annotations

import copy
import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from services.captioner.config import CaptionerSettings
from services.common.settings import SeavlSettings
from services.dedup.config import DedupSettings
from services.embedder.config import EmbedderSettings
from services.filter.config import FilterSettings
from services.gateway.config import GatewaySettings
from services.gateway.queue import CRAWL_QUEUE  # the queue `seavl worker --crawls` serves
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
        if resource["apiVersion"].startswith("keda.sh/"):
            continue  # KEDA's kinds: checked against KEDA's schema (test_k8s_keda_scales_...)
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
    secret_template = yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())
    kubernetes_validate.validate(secret_template, KUBERNETES_VERSION, strict=True)


def by_kind(rendered: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in rendered if r["kind"] == kind}


# every kind of `seavl worker`, with its flags
WORKERS = {
    "worker": [],
    "caption-worker": ["--captions"],
    "crawl-worker": ["--crawls"],
    "export-worker": ["--exports"],
}


def test_k8s_base_has_each_service_with_probes_and_resources() -> None:
    rendered = render(K8S / "base")
    deployments, services = by_kind(rendered, "Deployment"), by_kind(rendered, "Service")
    assert set(deployments) == {*PORTS, *WORKERS}
    assert set(services) == set(PORTS)
    for worker, flags in WORKERS.items():
        container = deployments[worker]["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["seavl", "worker", *flags]
        assert container["livenessProbe"]["exec"]["command"] == [*container["command"], "--check"]
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        image = "worker" if name in WORKERS else name
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


SERVICE_TOKEN = "SEAVL_SERVICE_TOKEN"
INTERNAL = ("embedder", "filter", "dedup", "captioner")
TOKEN_HOLDERS = {*PORTS, *WORKERS}


def test_compose_gives_the_service_token_to_seavl_services_only() -> None:
    """Each seavl container gets the token from the operator's environment (or .env), and
    compose refuses to start without it; no value is written in the file."""
    for name, service in compose()["services"].items():
        environment = service.get("environment", {})
        if "build" in service:
            value = environment[SERVICE_TOKEN]
            assert value.startswith("${SEAVL_SERVICE_TOKEN:?") and value.endswith("}"), name
            assert "$" not in value[2:-1] and "}" not in value[:-1]  # one interpolation
        else:
            assert SERVICE_TOKEN not in environment, name


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and `In` expressions) applied to `labels`."""
    matched = all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In"
        matched = matched and labels.get(expression["key"]) in expression["values"]
    return matched


@pytest.mark.parametrize("overlay", ["base", "overlays/gpu"])
def test_k8s_pods_take_the_service_token_from_a_secret_not_committed(overlay: str) -> None:
    rendered = render(K8S / overlay)
    deployments = by_kind(rendered, "Deployment")
    assert set(deployments) == TOKEN_HOLDERS
    for name, deployment in deployments.items():
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        reference = env[SERVICE_TOKEN]["valueFrom"]["secretKeyRef"]
        assert reference == {"name": "seavl-service-token", "key": "token"}, name
    assert by_kind(rendered, "Secret") == {}  # the operator makes it (README, kustomization)
    kustomization = (K8S / "base" / "kustomization.yaml").read_text()
    assert "create secret generic seavl-service-token" in kustomization


def test_k8s_only_the_gateway_and_workers_reach_the_internal_services() -> None:
    rendered = render(K8S / "base")
    deployments = by_kind(rendered, "Deployment")
    policies = list(by_kind(rendered, "NetworkPolicy").values())
    prometheus = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    workers = {"worker", "caption-worker", "crawl-worker"}
    expected_callers = {
        "embedder": {"gateway", *workers, "filter", "captioner"},
        "filter": {"gateway", *workers},
        "dedup": {"gateway", *workers},
        "captioner": {"gateway", "worker", "caption-worker"},  # crawl workers caption nothing
    }
    for target, deployment in deployments.items():
        guarding = [
            p for p in policies if selects(p["spec"]["podSelector"], pod_labels(deployment))
        ]
        if target not in INTERNAL:
            assert guarding == [], target  # the gateway is public; workers take no calls
            continue
        assert len(guarding) == 1, target
        spec = guarding[0]["spec"]
        assert spec["policyTypes"] == ["Ingress"]
        [port] = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        callers = set()
        for rule in spec["ingress"]:
            assert rule["ports"] == [{"port": port["name"], "protocol": "TCP"}]
            assert prometheus in rule["from"], target
            callers |= {
                source
                for peer in rule["from"]
                if "namespaceSelector" not in peer  # a peer without one is in this namespace
                for source, caller in deployments.items()
                if selects(peer["podSelector"], pod_labels(caller))
            }
        assert callers == expected_callers[target], target


SETTINGS: dict[str, type[SeavlSettings]] = {
    "embedder": EmbedderSettings,
    "filter": FilterSettings,
    "dedup": DedupSettings,
    "captioner": CaptionerSettings,
    "gateway": GatewaySettings,
}
OPERATOR_TOKEN = "t" * 64
INTERPOLATION = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def interpolated(value: str) -> str:
    """A compose value as compose makes it, with the operator's token set and nothing else."""

    def substitute(match: re.Match[str]) -> str:
        name, kind, text = match.groups()
        if name == SERVICE_TOKEN:
            return OPERATOR_TOKEN
        assert kind == "-", f"{name} has no default"
        return str(text)

    return INTERPOLATION.sub(substitute, value)


def check_settings(
    service: str, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service's settings, built from exactly `environment`, listen where the deployment
    routes traffic and hold the token, which every client they make sends."""
    for name in list(os.environ):
        if name.startswith("SEAVL_") or name in ("DATABASE_URL", "REDIS_URL", "QDRANT_URL"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = SETTINGS[service]()
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", PORTS[service])
    assert settings.service_token is not None
    assert settings.service_token.get_secret_value() == OPERATOR_TOKEN
    clients = [getattr(settings, name, None) for name in ("embedder", "filter", "dedup")]
    for client in filter(None, clients):
        assert client.token == settings.service_token
    if service in ("gateway", "embedder", "captioner"):
        # the gateway sends keys on: those who read them must see the same store
        storage = settings.storage
        assert storage.s3 is not None and storage.s3.endpoint == "minio:9000", service
        assert storage.s3.secret_key.get_secret_value()
    if isinstance(settings, GatewaySettings):
        assert settings.captioner is not None
        assert (settings.captioner.url, settings.captioner.attempts) == (
            "http://captioner:8004",
            1,  # the default's single try survives the URL set by the deployment
        )


@pytest.mark.parametrize("service", sorted(PORTS))
def test_compose_environment_makes_each_services_settings(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = compose()["services"][service]["environment"]
    check_settings(service, {k: interpolated(str(v)) for k, v in environment.items()}, monkeypatch)


@pytest.mark.parametrize("service", sorted(PORTS))
def test_k8s_environment_makes_each_services_settings(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = render(K8S / "base")
    config = by_kind(rendered, "ConfigMap")["seavl-config"]["data"]
    secrets = yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())["stringData"]
    token = {SERVICE_TOKEN: OPERATOR_TOKEN}  # what the operator's seavl-service-token holds
    check_settings(service, {**config, **secrets, **token}, monkeypatch)


DATABASE_USERS = ("filter", "dedup", "gateway", "worker", "caption-worker")


def test_compose_migrates_once_before_anything_uses_the_database() -> None:
    services = compose()["services"]
    migrate = services["migrate"]
    assert migrate["command"] == ["seavl", "db", "upgrade"]
    assert migrate["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert (
        migrate["environment"]["DATABASE_URL"] == services["gateway"]["environment"]["DATABASE_URL"]
    )
    for name in DATABASE_USERS:
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }, name


def test_k8s_migrates_with_a_job_that_a_new_rollout_runs_again() -> None:
    rendered = render(K8S / "base")
    job = by_kind(rendered, "Job")["db-upgrade"]
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["seavl", "db", "upgrade"]
    assert container["image"] == "seavl/gateway:0.1.0"
    assert {"configMapRef": {"name": "seavl-config"}} in container["envFrom"]
    assert pod["restartPolicy"] == "OnFailure" and pod["securityContext"]["runAsNonRoot"]
    # a Job's template is immutable: the finished one must go for the next apply to make one
    assert 0 < job["spec"]["ttlSecondsAfterFinished"] <= 3600
    deployments = by_kind(rendered, "Deployment")
    for name in ("filter", "dedup", "gateway", "worker"):
        commands = " ".join(
            deployments[name]["spec"]["template"]["spec"]["containers"][0].get("command", [])
        )
        assert "db upgrade" not in commands  # the services only wait for it


def test_compose_pins_every_image_to_a_release_that_still_pulls() -> None:
    """`:latest` (or a tag that moves) pulls something else tomorrow, and MinIO's Docker Hub
    images are gone: every image names an exact release, MinIO's from quay.io."""
    images = {name: s["image"] for name, s in compose()["services"].items() if "image" in s}
    assert set(images) == {"redis", "minio", "qdrant", "postgres"}
    for name, image in images.items():
        repository, _, tag = image.rpartition(":")
        assert repository and tag != "latest", name
        assert re.fullmatch(r"v?\d+\.\d+(\.\d+)?(-[a-z]+)?|RELEASE\.[0-9T-]+Z", tag), (name, tag)
    assert images["minio"].startswith("quay.io/minio/minio:RELEASE.")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim", dockerfile, re.MULTILINE)


# KEDA's ScaledObject schema and what its `redis` scaler reads (source and version in the file)
KEDA = json.loads((ROOT / "tests" / "fixtures" / "keda-v2.20.2.json").read_text())


def crawl_worker_container(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    [container] = by_kind(rendered, "Deployment")["crawl-worker"]["spec"]["template"]["spec"][
        "containers"
    ]
    return dict(container)


def test_k8s_crawl_worker_runs_the_crawl_queue_with_the_token_probes_and_resources() -> None:
    rendered = render(K8S / "base")
    deployment = by_kind(rendered, "Deployment")["crawl-worker"]
    kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    assert "replicas" not in deployment["spec"]  # KEDA sets it; an apply must not put it back
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
    container = crawl_worker_container(rendered)
    assert container["image"] == "seavl/worker:0.1.0"
    assert container["command"] == ["seavl", "worker", "--crawls"]
    check = ["seavl", "worker", "--crawls", "--check"]
    assert container["readinessProbe"]["exec"]["command"] == check
    assert container["livenessProbe"]["exec"]["command"] == check
    env = {e["name"]: e for e in container["env"]}
    reference = env[SERVICE_TOKEN]["valueFrom"]["secretKeyRef"]
    assert reference == {"name": "seavl-service-token", "key": "token"}
    image_worker = by_kind(rendered, "Deployment")["worker"]["spec"]["template"]["spec"]
    assert container["envFrom"] == image_worker["containers"][0]["envFrom"]  # same DB, Redis, S3
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"memory": "2Gi"},
    }


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD's schema as the API server applies it under kubectl's strict field validation:
    an object whose properties are listed takes no other field."""
    result = dict(schema)
    if "properties" in schema:
        result["properties"] = {name: closed(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            result["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            result[key] = closed(schema[key])
    return result


def test_k8s_keda_scales_crawl_workers_on_the_length_of_the_crawl_queue() -> None:
    rendered = render(K8S / "base")
    scaled_objects = by_kind(rendered, "ScaledObject")
    assert set(scaled_objects) == {"crawl-worker"}
    scaled_object = scaled_objects["crawl-worker"]
    assert scaled_object["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled_object["metadata"]["namespace"] == "seavl"
    validator = jsonschema.Draft4Validator(closed(KEDA["scaledObjectSchema"]))
    validator.validate(scaled_object)
    misspelt = copy.deepcopy(scaled_object)
    misspelt["spec"]["maxReplicas"] = misspelt["spec"].pop("maxReplicaCount")
    assert not validator.is_valid(misspelt)  # the check sees a field KEDA does not know

    spec = scaled_object["spec"]
    target = spec["scaleTargetRef"]
    assert target.get("apiVersion", "apps/v1") == "apps/v1"  # KEDA's defaults
    assert target.get("kind", "Deployment") == "Deployment"
    assert target["name"] == "crawl-worker" and target["name"] in by_kind(rendered, "Deployment")
    hpas = by_kind(rendered, "HorizontalPodAutoscaler").values()
    assert all(h["spec"]["scaleTargetRef"]["name"] != "crawl-worker" for h in hpas)  # one owner
    assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] >= 10
    assert spec["pollingInterval"] > 0 and spec["cooldownPeriod"] > 0

    [trigger] = spec["triggers"]
    assert trigger["type"] == "redis"  # reads a sorted set's ZCARD: arq's queue (the manifest)
    metadata = trigger["metadata"]
    scaler = KEDA["redisTrigger"]
    known = set(scaler["metadata"]) | {f"{key}FromEnv" for key in scaler["fromEnv"]}
    assert set(metadata) <= known, set(metadata) - known  # KEDA ignores unknown keys silently
    assert set(scaler["required"]) <= set(metadata)
    assert metadata["listName"] == CRAWL_QUEUE
    assert metadata["listLength"] == "4"  # shards per worker, running and waiting
    assert metadata.get("activationListLength", "0") == "0"  # the first shard wakes a worker
    # the KEDA operator connects from its own namespace, to the Redis the workers use
    redis_url = urlsplit(by_kind(rendered, "ConfigMap")["seavl-config"]["data"]["REDIS_URL"])
    namespace = scaled_object["metadata"]["namespace"]
    service = f"{redis_url.hostname}.{namespace}.svc.cluster.local"
    assert metadata["address"] == f"{service}:{redis_url.port}"
    assert metadata["databaseIndex"] == redis_url.path.strip("/")
    assert ("authenticationRef" in trigger) == (redis_url.password is not None)


def test_k8s_crawl_workers_reach_embedder_filter_and_dedup_like_the_image_worker() -> None:
    rendered = render(K8S / "base")
    deployments = by_kind(rendered, "Deployment")
    policies = list(by_kind(rendered, "NetworkPolicy").values())

    def reachable_from(caller: str) -> set[str]:
        """The internal services whose policy lets in `caller`'s pods from this namespace."""
        return {
            target
            for target in INTERNAL
            for policy in policies
            if selects(policy["spec"]["podSelector"], pod_labels(deployments[target]))
            for rule in policy["spec"]["ingress"]
            for peer in rule["from"]
            if "namespaceSelector" not in peer
            and selects(peer["podSelector"], pod_labels(deployments[caller]))
        }

    assert reachable_from("crawl-worker") == {"embedder", "filter", "dedup"}
    assert reachable_from("crawl-worker") < reachable_from("worker")

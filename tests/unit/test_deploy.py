"""docker-compose.yml and deploy/k8s, checked offline against the Compose spec and Kubernetes'
own schemas, and against what the services need (ports, probes, the embedder's HPA and GPU)."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from arq.constants import default_queue_name
from prometheus_client import CollectorRegistry

from services.captioner.config import CaptionerSettings
from services.common.database import DatabasePool
from services.common.settings import SeavlSettings
from services.common.worker_alive import HEARTBEAT_FILE_VARIABLE, write_heartbeat
from services.databases import MIGRATION_POOL
from services.dedup.config import DedupSettings
from services.embedder.config import EmbedderSettings
from services.embedder.serving import EmbedderMetrics
from services.filter.config import FilterSettings
from services.gateway.config import GatewaySettings
from services.gateway.queue import CAPTION_QUEUE, CRAWL_QUEUE, EXPORT_QUEUE
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
    alive = ["CMD", "python", "-m", "services.common.worker_alive", "--queue"]
    assert services["worker"]["healthcheck"]["test"] == [*alive, "images"]
    captions = services["caption-worker"]
    assert captions["command"] == ["seavl", "worker", "--captions"]
    assert captions["healthcheck"]["test"] == [*alive, "captions"]
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


# every kind of `seavl worker`: its flags and the queue its heartbeat names
WORKERS = {
    "worker": ([], "images"),
    "caption-worker": (["--captions"], "captions"),
    "crawl-worker": (["--crawls"], "crawls"),
    "export-worker": (["--exports"], "exports"),
}


def config_map(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    """seavl-config, named with a hash of its data by the configMapGenerator."""
    [made] = [r for r in rendered if r["kind"] == "ConfigMap"]
    assert made["metadata"]["name"].startswith("seavl-config-")
    return made


def test_k8s_base_has_each_service_with_probes_and_resources() -> None:
    rendered = render(K8S / "base")
    deployments, services = by_kind(rendered, "Deployment"), by_kind(rendered, "Service")
    assert set(deployments) == {*PORTS, *WORKERS}
    assert set(services) == set(PORTS)
    config = config_map(rendered)["metadata"]["name"]
    for worker, (flags, queue) in WORKERS.items():
        container = deployments[worker]["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["seavl", "worker", *flags]
        alive = ["python", "-m", "services.common.worker_alive", "--queue", queue]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["exec"]["command"] == alive, (worker, probe)
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        image = "worker" if name in WORKERS else name
        assert container["image"] == f"ghcr.io/seavl/{image}:0.1.0"
        assert container["startupProbe"] and container["readinessProbe"]
        assert container["livenessProbe"]
        assert container["resources"]["requests"]["cpu"]
        assert {"configMapRef": {"name": config}} in container["envFrom"]
        assert deployment["metadata"]["namespace"] == "seavl"
        if name in PORTS:
            assert container["ports"][0]["containerPort"] == PORTS[name]
            assert services[name]["spec"]["ports"][0]["port"] == PORTS[name]
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert by_kind(rendered, "HorizontalPodAutoscaler") == {}  # KEDA makes them


def test_gpu_overlay_puts_the_embedder_on_gpu_nodes() -> None:
    embedder = by_kind(render(K8S / "overlays" / "gpu"), "Deployment")["embedder"]
    pod = embedder["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["cpu"] == "2"  # the base survives the patch
    assert container["image"] == "ghcr.io/seavl/embedder:0.1.0-gpu"
    # a rollout never waits for a spare GPU: it stops a pod before it starts the next
    assert embedder["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
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
            [policy] = guarding  # every pod has its policy (a pod without one takes anything)
            rules = policy["spec"]["ingress"]
            if target == "gateway":  # the public API: its port, from anywhere
                assert rules == [{"ports": [{"port": "http", "protocol": "TCP"}]}]
            else:
                assert rules == [], target  # workers take no calls
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
) -> SeavlSettings:
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
    return settings


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
    config = config_map(rendered)["data"]
    secrets = yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())["stringData"]
    [container] = by_kind(rendered, "Deployment")[service]["spec"]["template"]["spec"]["containers"]
    own: dict[str, str] = {}  # the pod's own variables: the Secret's keys it is given, values
    for variable in container["env"]:
        source = variable.get("valueFrom", {})
        if "secretKeyRef" in source and source["secretKeyRef"]["name"] == "seavl-secrets":
            own[variable["name"]] = secrets[source["secretKeyRef"]["key"]]
        elif "value" in variable:
            own[variable["name"]] = variable["value"]
    token = {SERVICE_TOKEN: OPERATOR_TOKEN}  # what the operator's seavl-service-token holds
    settings = check_settings(service, {**config, **own, **token}, monkeypatch)
    pool = getattr(settings, "database_pool", None)
    if pool is not None:  # the Deployment's share of PostgreSQL's connections is the one used
        prefix = f"SEAVL_{service.upper()}_DATABASE_POOL__"
        assert (pool.size, pool.overflow) == (
            int(own[f"{prefix}SIZE"]),
            int(own[f"{prefix}OVERFLOW"]),
        )


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
    assert container["image"] == "ghcr.io/seavl/gateway:0.1.0"
    assert {"configMapRef": {"name": config_map(rendered)["metadata"]["name"]}} in container[
        "envFrom"
    ]
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
    assert container["image"] == "ghcr.io/seavl/worker:0.1.0"
    assert container["command"] == ["seavl", "worker", "--crawls"]
    check = ["python", "-m", "services.common.worker_alive", "--queue", "crawls"]
    assert container["readinessProbe"]["exec"]["command"] == check
    assert container["livenessProbe"]["exec"]["command"] == check
    env = {e["name"]: e for e in container["env"]}
    reference = env[SERVICE_TOKEN]["valueFrom"]["secretKeyRef"]
    assert reference == {"name": "seavl-service-token", "key": "token"}
    image_worker = by_kind(rendered, "Deployment")["worker"]["spec"]["template"]["spec"]
    assert container["envFrom"] == image_worker["containers"][0]["envFrom"]  # same Redis, S3
    secret_keys = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    image_keys = {
        e["name"]
        for e in image_worker["containers"][0]["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert secret_keys == image_keys  # the same database and store
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
    assert set(scaled_objects) == {"embedder", *WORKERS}
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
    assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] >= 4
    assert spec["pollingInterval"] > 0 and spec["cooldownPeriod"] > 0

    [trigger] = spec["triggers"]
    assert trigger["type"] == "redis"  # reads a sorted set's ZCARD: arq's queue (the manifest)
    metadata = trigger["metadata"]
    scaler = KEDA["redisTrigger"]
    known = set(scaler["metadata"]) | {f"{key}FromEnv" for key in scaler["fromEnv"]}
    assert set(metadata) <= known, set(metadata) - known  # KEDA ignores unknown keys silently
    assert set(scaler["required"]) <= set(metadata)
    assert metadata["listName"] == CRAWL_QUEUE
    # a worker's shards at once (CRAWL__SHARDS_AT_ONCE): the count never asks for fewer
    # workers than are busy, so scaling in does not cancel running shards
    assert metadata["listLength"] == str(GatewaySettings().crawl.shards_at_once)
    assert (
        spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
            "stabilizationWindowSeconds"
        ]
        >= 300
    )
    assert metadata.get("activationListLength", "0") == "0"  # the first shard wakes a worker
    # the KEDA operator connects from its own namespace, to the Redis the workers use
    redis_url = urlsplit(config_map(rendered)["data"]["REDIS_URL"])
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


# ---- issue 17: manifests that hold in production

OVERLAYS = ["base", "overlays/gpu"]


def pods(rendered: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod template (Deployments and the Job), by its workload's name."""
    return {
        r["metadata"]["name"]: r["spec"]["template"]["spec"]
        for r in rendered
        if r["kind"] in ("Deployment", "Job")
    }


def timed(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    began = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, timeout=60)
    return time.perf_counter() - began, done.returncode


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_exec_probes_wait_longer_than_their_command_takes(overlay: str, tmp_path: Path) -> None:
    """Each exec probe is run here as the kubelet would run it in a pod whose worker is alive
    (its heartbeat just written); its timeout is well above the time it took (the slowest of
    three runs), and above Kubernetes' default of 1 s that `seavl worker --check` overran."""
    exec_probes = 0
    for name, pod in pods(render(K8S / overlay)).items():
        for container in pod["containers"]:
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(kind)
                if probe is None or "exec" not in probe:
                    continue
                exec_probes += 1
                command = list(probe["exec"]["command"])
                assert command[0] == "python", (name, kind)  # the image's interpreter
                queue = command[command.index("--queue") + 1]
                heartbeat = tmp_path / f"{queue}.alive"
                write_heartbeat(heartbeat, queue)
                env = {**os.environ, HEARTBEAT_FILE_VARIABLE: str(heartbeat)}
                runs = [timed([sys.executable, *command[1:]], env) for _ in range(3)]
                assert all(code == 0 for _, code in runs), (name, kind, runs)
                slowest = max(seconds for seconds, _ in runs)
                timeout = probe.get("timeoutSeconds", 1)
                assert timeout >= 2 and timeout > 5 * slowest, (name, kind, slowest, timeout)
    assert exec_probes == 3 * len(WORKERS)


def test_k8s_every_deployment_has_a_disruption_budget_and_spreads_over_nodes() -> None:
    rendered = render(K8S / "base")
    budgets = by_kind(rendered, "PodDisruptionBudget")
    for name, deployment in by_kind(rendered, "Deployment").items():
        covering = [
            b for b in budgets.values() if selects(b["spec"]["selector"], pod_labels(deployment))
        ]
        assert len(covering) == 1, name
        assert covering[0]["spec"] == {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
        }
        [spread] = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert spread["topologyKey"] == "kubernetes.io/hostname"
        assert selects(spread["labelSelector"], pod_labels(deployment))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_k8s_pods_meet_the_restricted_pod_security_profile(overlay: str) -> None:
    for name, pod in pods(render(K8S / overlay)).items():
        assert pod["automountServiceAccountToken"] is False, name
        context = pod["securityContext"]
        assert context["runAsNonRoot"] and context["runAsUser"] == 10001, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"]:
            own = container["securityContext"]
            assert own["allowPrivilegeEscalation"] is False, name
            assert own["capabilities"] == {"drop": ["ALL"]}, name
            assert own["readOnlyRootFilesystem"] is True, name
            # the one writable place: an emptyDir at /tmp (heartbeats, temporary files)
            assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}], name
        # an export stages whole shards there: more room than the others' 1Gi
        size = "20Gi" if name == "export-worker" else "1Gi"
        assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": size}}], name


# what each workload's service reads from the Secret: the database, the object store, a VLM key
SECRET_KEYS = {
    "DATABASE_URL": "database_url",
    "SEAVL_STORAGE_S3__ACCESS_KEY": "storage",
    "SEAVL_STORAGE_S3__SECRET_KEY": "storage",
    "SEAVL_CAPTIONER_VLM__API_KEY": "vlm",
}


def test_k8s_pods_get_only_the_secrets_their_service_reads() -> None:
    rendered = render(K8S / "base")
    template = yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())["stringData"]
    assert set(template) == set(SECRET_KEYS)
    for name, pod in pods(rendered).items():
        [container] = pod["containers"]
        assert all("secretRef" not in source for source in container.get("envFrom", [])), name
        given = {
            e["valueFrom"]["secretKeyRef"]["key"]
            for e in container["env"]
            if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "seavl-secrets"
        }
        service = "gateway" if name in WORKERS or name == "db-upgrade" else name
        fields = SETTINGS[service].model_fields
        wanted = {key for key, field in SECRET_KEYS.items() if field in fields}
        if name == "db-upgrade":
            wanted = {"DATABASE_URL"}  # it migrates, and touches nothing else
        assert given == wanted, (name, given, wanted)
    config = config_map(rendered)["data"]
    for key, value in config.items():  # nothing secret in the ConfigMap
        assert not re.search(r"(PASSWORD|SECRET|API_KEY|TOKEN)", key), key
        assert urlsplit(value).password is None if "://" in value else True, key


def test_k8s_a_change_of_configuration_replaces_the_pods(tmp_path: Path) -> None:
    """The ConfigMap's name carries a hash of config.env (configMapGenerator): changing a line
    changes the name every pod refers to, so their template changes and they are replaced."""
    copy_of = tmp_path / "k8s"
    shutil.copytree(K8S, copy_of)
    before = render(copy_of / "base")
    env_file = copy_of / "base" / "config.env"
    env_file.write_text(env_file.read_text().replace("offline-labels", "openai-compatible"))
    after = render(copy_of / "base")
    old, new = config_map(before)["metadata"]["name"], config_map(after)["metadata"]["name"]
    assert old != new
    for name, pod in pods(after).items():
        assert {"configMapRef": {"name": new}} in pod["containers"][0]["envFrom"], name


# PostgreSQL's default max_connections (100) less its superuser_reserved_connections (3)
POSTGRES_CONNECTIONS = 97


def test_k8s_database_connections_fit_in_postgres_default() -> None:
    """Every replica of every workload that uses the database, at its autoscaler's maximum and
    with the extra pod a rollout may start (maxSurge), each with its whole pool open: at most
    what PostgreSQL allows by default."""
    rendered = render(K8S / "base")
    scaled = {
        s["spec"]["scaleTargetRef"]["name"]: s for s in by_kind(rendered, "ScaledObject").values()
    }
    total = 0
    for name, resource in [
        *by_kind(rendered, "Deployment").items(),
        *by_kind(rendered, "Job").items(),
    ]:
        [container] = resource["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        if "DATABASE_URL" not in env:
            continue
        if name == "db-upgrade":
            total += MIGRATION_POOL.connections  # `seavl db upgrade`'s own pool
            continue
        prefix = "SEAVL_GATEWAY" if name in WORKERS else f"SEAVL_{name.upper()}"
        pool = DatabasePool(
            size=int(env[f"{prefix}_DATABASE_POOL__SIZE"] or 0),
            overflow=int(env[f"{prefix}_DATABASE_POOL__OVERFLOW"] or 0),
        )
        replicas = (
            scaled[name]["spec"]["maxReplicaCount"]
            if name in scaled
            else resource["spec"]["replicas"]
        )
        surge = resource["spec"].get("strategy", {}).get("rollingUpdate", {}).get("maxSurge")
        assert isinstance(surge, int), name  # the default, 25 %, would hide extra pods here
        total += (replicas + surge) * pool.connections
    assert 50 < total <= POSTGRES_CONNECTIONS, total


def test_k8s_autoscalers_scale_the_embedder_and_the_workers_on_their_queues() -> None:
    rendered = render(K8S / "base")
    deployments = by_kind(rendered, "Deployment")
    scaled = by_kind(rendered, "ScaledObject")
    validator = jsonschema.Draft4Validator(closed(KEDA["scaledObjectSchema"]))
    queues = {
        "worker": default_queue_name,
        "caption-worker": CAPTION_QUEUE,
        "crawl-worker": CRAWL_QUEUE,
        "export-worker": EXPORT_QUEUE,
    }
    for name in ("embedder", *WORKERS):
        scaled_object = scaled[name]
        validator.validate(scaled_object)
        assert scaled_object["spec"]["scaleTargetRef"]["name"] == name
        assert "replicas" not in deployments[name]["spec"], name  # the autoscaler owns it
        [trigger] = scaled_object["spec"]["triggers"]
        scaler = KEDA["prometheusTrigger" if name == "embedder" else "redisTrigger"]
        assert set(trigger["metadata"]) <= set(scaler["metadata"]), name
        assert set(scaler["required"]) <= set(trigger["metadata"]), name
        if name == "embedder":
            assert trigger["type"] == "prometheus"
            # a metric the embedder exports: the images waiting for inference
            exported = {m.name for m in EmbedderMetrics(CollectorRegistry()).queue_depth.collect()}
            metric = re.match(r"sum\((\w+)\{", trigger["metadata"]["query"])
            assert metric is not None and metric.group(1) in exported
            assert float(trigger["metadata"]["threshold"]) > 0
            assert scaled_object["spec"]["minReplicaCount"] >= 2  # never down to one
        else:
            assert trigger["type"] == "redis"
            assert trigger["metadata"]["listName"] == queues[name], name
    # the image workers also run the reconciler: at least one always
    assert scaled["worker"]["spec"]["minReplicaCount"] >= 1
    assert by_kind(rendered, "HorizontalPodAutoscaler") == {}  # no second owner


def test_k8s_the_embedder_sizes_its_threads_from_its_cpu_request() -> None:
    [container] = by_kind(render(K8S / "base"), "Deployment")["embedder"]["spec"]["template"][
        "spec"
    ]["containers"]
    env = {e["name"]: e for e in container["env"]}
    for name in ("SEAVL_EMBEDDER_RUNTIME__INTRA_OP_THREADS", "SEAVL_EMBEDDER_DETECTION__THREADS"):
        reference = env[name]["valueFrom"]["resourceFieldRef"]
        assert reference == {
            "containerName": "embedder",
            "resource": "requests.cpu",
            "divisor": "1",
        }
    assert int(container["resources"]["requests"]["cpu"]) >= 1


# What each onnxruntime-gpu release on PyPI was built for: its wheel's `cuda` and `cudnn` extras
# (1.31.1: nvidia-cuda-runtime~=13.0, nvidia-cudnn-cu13~=9.0), and the least NVIDIA driver
# each CUDA major needs (CUDA 13.0: the 580 series).
ONNXRUNTIME_GPU_BUILT_FOR = {"1.31.1": ("13", "9")}
CUDA_MINIMUM_DRIVER = {"12": 525, "13": 580}


def test_the_gpu_image_pins_matching_cuda_cudnn_and_onnxruntime_gpu() -> None:
    lock = (ROOT / "requirements" / "embedder-gpu.txt").read_text()
    pinned = re.search(r"^onnxruntime-gpu==(\S+)", lock, re.MULTILINE)
    assert pinned is not None
    cuda, cudnn = ONNXRUNTIME_GPU_BUILT_FOR[pinned.group(1)]
    dockerfile = (ROOT / "deploy" / "docker" / "embedder-gpu.Dockerfile").read_text()
    base = re.search(
        r"^FROM nvidia/cuda:(\d+)\.(\d+)\.(\d+)-cudnn-runtime-ubuntu(\S+)", dockerfile, re.M
    )
    assert base is not None and base.group(1) == cuda  # the CUDA major it was built for
    assert "cudnn-runtime" in base.group(0) and f"cuDNN {cudnn}" in dockerfile
    assert f"onnxruntime-gpu {pinned.group(1)}" in dockerfile  # stated beside the base
    assert "--python-version 3.12" not in lock or base.group(4) == "24.04"
    pod = by_kind(render(K8S / "overlays" / "gpu"), "Deployment")["embedder"]["spec"]["template"][
        "spec"
    ]
    [term] = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    [driver] = term["matchExpressions"]
    assert driver["key"] == "nvidia.com/cuda.driver-version.major" and driver["operator"] == "Gt"
    assert int(driver["values"][0]) + 1 == CUDA_MINIMUM_DRIVER[cuda]


def test_compose_gpu_profile_takes_the_embedders_traffic() -> None:
    services = compose()["services"]
    assert services["embedder-gpu"]["profiles"] == ["gpu"]
    urls = {
        (name, key): value
        for name, service in services.items()
        for key, value in service.get("environment", {}).items()
        if key.endswith("EMBEDDER__URL")
    }
    assert len(urls) >= 3
    for (name, key), value in urls.items():
        assert interpolated(value) == "http://embedder:8001", (name, key)  # by default
        assert value == "${SEAVL_EMBEDDER_URL:-http://embedder:8001}", (name, key)
        # with SEAVL_EMBEDDER_URL=http://embedder-gpu:8001 it goes to the GPU, which they wait
        # for (workers through the gateway)
        if "gateway" in services[name]["depends_on"]:
            continue
        assert services[name]["depends_on"]["embedder-gpu"] == {
            "condition": "service_healthy",
            "required": False,
        }, name


def test_compose_restarts_every_long_running_service() -> None:
    for name, service in compose()["services"].items():
        expected = "on-failure" if name == "migrate" else "unless-stopped"  # a one-shot job
        assert service.get("restart") == expected, name


def test_each_image_is_a_target_on_one_shared_base() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = {
        stage: parent for parent, stage in re.findall(r"^FROM (\S+) AS (\S+)$", dockerfile, re.M)
    }
    for image in ("embedder", "filter", "dedup", "captioner", "gateway", "worker"):
        chain = [image]
        while chain[-1] in stages:
            chain.append(stages[chain[-1]])
        assert "base" in chain, image  # every image stands on the shared layer
        lock = "gateway" if image == "worker" else image
        assert f"-r requirements/{lock}.txt" in dockerfile, image
    assert "-r requirements/common.txt" in dockerfile
    # the shared layer is exactly what the locks share
    checked = subprocess.run(
        [sys.executable, "scripts/common_lock.py", "--check"], cwd=ROOT, capture_output=True
    )
    assert checked.returncode == 0, checked.stderr
    for service in compose()["services"].values():
        build = service.get("build", {})
        if "target" in build:
            assert f"AS {build['target']}\n" in dockerfile


def test_a_release_sets_registry_and_tag_for_every_image_gpu_included(tmp_path: Path) -> None:
    """`make release-manifests` (scripts/set_release.py) writes the base's images and the GPU
    overlay's together: the GPU embedder never stays on an older registry or tag."""
    copy_of = tmp_path / "k8s"
    shutil.copytree(K8S, copy_of)
    subprocess.run(
        [sys.executable, "scripts/set_release.py", "registry.example.com/me", "0.2.0"]
        + ["--k8s", str(copy_of)],
        cwd=ROOT,
        check=True,
    )
    for overlay, embedder in [("base", "0.2.0"), ("overlays/gpu", "0.2.0-gpu")]:
        for name, pod in pods(render(copy_of / overlay)).items():
            image = pod["containers"][0]["image"]
            service = "worker" if name in WORKERS else "gateway" if name == "db-upgrade" else name
            tag = embedder if name == "embedder" else "0.2.0"
            assert image == f"registry.example.com/me/{service}:{tag}", (overlay, name)
    # and the manifests as committed agree with each other the same way
    gpu = by_kind(render(K8S / "overlays" / "gpu"), "Deployment")["embedder"]
    cpu = by_kind(render(K8S / "base"), "Deployment")["embedder"]
    gpu_image = gpu["spec"]["template"]["spec"]["containers"][0]["image"]
    assert gpu_image == cpu["spec"]["template"]["spec"]["containers"][0]["image"] + "-gpu"


def test_the_makefiles_registry_and_tag_are_the_manifests() -> None:
    """`make images` and `make release-manifests` take REGISTRY and TAG from one place, the
    Makefile, whose defaults are what the committed manifests name."""
    makefile = (ROOT / "Makefile").read_text()
    registry = re.search(r"^REGISTRY \?= (\S+)$", makefile, re.MULTILINE)
    tag = re.search(r"^TAG \?= (\S+)$", makefile, re.MULTILINE)
    assert registry is not None and tag is not None
    for name, pod in pods(render(K8S / "base")).items():
        image = pod["containers"][0]["image"]
        assert image.startswith(f"{registry.group(1)}/"), name
        assert image.endswith(f":{tag.group(1)}"), name

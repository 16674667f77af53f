"""What Prometheus scrapes: one metric name per thing across the services, told apart by a
`service` label, and each process' own memory and CPU."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.integration.gateway_stack import running_stack

PROCESS_METRICS = ("process_resident_memory_bytes", "process_cpu_seconds_total")


def samples(metrics: str, name: str) -> list[str]:
    return [line for line in metrics.splitlines() if line.startswith(f"{name}{{")]


def test_two_services_count_requests_under_one_name_with_their_own_label(
    tmp_path: Path, live_embedder: str
) -> None:
    with (
        running_stack(f"sqlite:///{tmp_path / 'seavl.db'}", tmp_path, live_embedder) as stack,
        httpx.Client(base_url=live_embedder) as embedder,
    ):
        scraped = {}
        for service, client in (("gateway", stack.gateway), ("embedder", embedder)):
            assert client.get("/healthz").status_code == 200
            scraped[service] = client.get("/metrics").text
    for service, metrics in scraped.items():
        counted = (
            f'seavl_http_requests_total{{method="GET",route="/healthz",service="{service}",'
            'status="200"}'
        )
        assert any(
            line.startswith(counted) for line in samples(metrics, "seavl_http_requests_total")
        )
        latency = samples(metrics, "seavl_http_request_seconds_count")
        assert any(f'service="{service}"' in line for line in latency)
        assert f"seavl_{service}_http" not in metrics  # no name of the service's own any more
        for name in PROCESS_METRICS:
            (line,) = [row for row in metrics.splitlines() if row.startswith(f"{name} ")]
            assert float(line.split()[-1]) > 0
        assert "python_info{" in metrics

"""Batch dedup of a stored collection (a crawl): groups of near-duplicates and what to keep.

One neighbour search per stored point, joined with union-find, so memory grows with the number
of points, never with their pairs. In each group the earliest inserted image is kept (ties: the
smaller sha256). Progress and the result live in SQL, so any replica can report on the job.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta

import numpy as np
from sqlalchemy.engine import Engine

from services.common.database import as_utc, session_scope, utcnow
from services.common.errors import ServiceError
from services.dedup.config import DedupSettings
from services.dedup.dedup import collection_name, unknown_collection
from services.dedup.tables import BatchJobStatus, JobRow
from services.dedup.vectors import VectorStore

logger = logging.getLogger(__name__)

STALE_AFTER = timedelta(minutes=2)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        root = item
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while item != root:  # path compression
            self.parent[item], item = root, self.parent.get(item, item)
        return root

    def union(self, a: str, b: str) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)


def find_duplicate_groups(
    vectors: VectorStore,
    name: str,
    threshold: float,
    neighbours: int,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[str], list[dict[str, object]]]:
    """(kept sha256s, groups as {keep, duplicates}) for every point of the collection."""
    union_find = _UnionFind()
    inserted_at: dict[str, float] = {}
    processed = 0
    for page in vectors.pages(name):
        matrix = np.stack([p.vector for p in page]).astype(np.float32)
        found = vectors.search(name, matrix, threshold, neighbours)
        for point, matches in zip(page, found, strict=True):
            inserted_at[point.sha256] = point.inserted_at
            for other, _ in matches:
                if other != point.sha256:
                    union_find.union(point.sha256, other)
        processed += len(page)
        if on_progress is not None:
            on_progress(processed)
    members: dict[str, list[str]] = {}
    for sha256 in inserted_at:
        members.setdefault(union_find.find(sha256), []).append(sha256)
    kept: list[str] = []
    groups: list[dict[str, object]] = []
    for group in members.values():
        group.sort(key=lambda s: (inserted_at[s], s))
        kept.append(group[0])
        if len(group) > 1:
            groups.append({"keep": group[0], "duplicates": group[1:]})
    groups.sort(key=lambda g: str(g["keep"]))
    return sorted(kept), groups


class BatchJobs:
    def __init__(self, settings: DedupSettings, engine: Engine, vectors: VectorStore) -> None:
        self.settings = settings
        self.engine = engine
        self.vectors = vectors

    def start(self, namespace: str, model: str, threshold: float) -> JobRow:
        name = collection_name(namespace, model)
        if self.vectors.dim(name) is None:
            raise unknown_collection(namespace, model)
        job = JobRow(
            id=str(uuid.uuid4()),
            namespace=namespace,
            model=model,
            threshold=threshold,
            total=self.vectors.count(name),
        )
        with session_scope(self.engine) as session:
            session.add(job)
        threading.Thread(
            target=self._run,
            args=(job.id, name, threshold),
            daemon=True,
            name=f"dedup-job-{job.id[:8]}",
        ).start()
        return job

    def _update(self, job_id: str, **fields: object) -> None:
        with session_scope(self.engine) as session:
            job = session.get(JobRow, job_id)
            assert job is not None
            for key, value in fields.items():
                setattr(job, key, value)
            job.updated_at = utcnow()
            session.add(job)

    def _run(self, job_id: str, name: str, threshold: float) -> None:
        try:
            self._update(job_id, status=BatchJobStatus.RUNNING.value)
            kept, groups = find_duplicate_groups(
                self.vectors,
                name,
                threshold,
                max(self.settings.max_neighbours, 100),
                on_progress=lambda done: self._update(job_id, processed=done),
            )
            result = json.dumps({"kept": kept, "groups": groups})
            self._update(
                job_id, status=BatchJobStatus.DONE.value, result_json=result, groups=len(groups)
            )
        except Exception as exc:  # the job records its failure instead of dying silently
            logger.exception("batch dedup job %s failed", job_id)
            self._update(
                job_id, status=BatchJobStatus.FAILED.value, error=f"{type(exc).__name__}: {exc}"
            )

    def get(self, job_id: str) -> JobRow:
        with session_scope(self.engine) as session:
            job = session.get(JobRow, job_id)
        if job is None:
            raise ServiceError(404, "unknown_job", f"no batch dedup job {job_id}")
        unfinished = (BatchJobStatus.QUEUED, BatchJobStatus.RUNNING)
        if job.status in unfinished and utcnow() - as_utc(job.updated_at) > STALE_AFTER:
            job.status = BatchJobStatus.INTERRUPTED.value  # its replica stopped reporting
        return job

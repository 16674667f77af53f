"""The embedded vector store: one folder, one process, an HNSW graph per collection (usearch).

Qdrant Edge was tried first and left: its `optimize()`, the only way to build its HNSW index,
holds the GIL for the whole build (20k 1280-d points: 55 s, 5.6 s with binary quantization),
so every request of the service would stall while an index is built or segments merged.
usearch builds its graph point by point as they are added, with the GIL released.

The folder holds:
- `dedup.lock`, locked (flock) by the one process that has the store open;
- `vectors.sqlite`, the source of truth: each point's float32 vector, sha256 and payload;
- per collection, `<name>.planes.npy` (random hyperplanes) and `<name>.usearch` (the graph).

The graph is built on the signs of each vector's projections on the hyperplanes (SimHash: two
codes differ in a bit with probability angle/π), 128 bytes a point at 1024 bits, so it stays in
memory at millions of points. A search takes the graph's nearest codes (or, in a small
collection, the nearest of all codes) as candidates, drops those whose code is too far for a
cosine at the threshold (`code_distance_bound`: most queries keep none, and read nothing), and
decides on the others' exact float32 cosine, read from SQLite: a neighbour is a point whose
cosine is at least the threshold, never an estimate. The graph is saved every `snapshot_every`
writes and on close; on open, the points written after the last save (by a process that died,
say) are added again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
from usearch.index import BatchMatches, Index

from services.common.locks import LockHeld, hold_exclusive
from services.dedup.config import DedupSettings
from services.dedup.vectors import (
    Matrix,
    StoredPoint,
    dimension_mismatch,
    too_many_collections,
)

logger = logging.getLogger(__name__)

Keys = npt.NDArray[np.uint64]
# keys per query: a batch job asks for up to 51,200 candidates at once, and SQLite builds take
# 32,766 parameters a statement by default (Debian's, 250,000)
READ_CHUNK = 900
# A stored point at cosine ≥ ε from the query has a code farther than `code_distance_bound` with
# at most this probability: such candidates are not read (a miss this rare is far below the
# graph's own, and a reported duplicate is still decided on the exact cosine).
CODE_MISS_PROBABILITY = 1e-12
COSINE_ROUNDING = 1e-5
SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY,
    dim INTEGER NOT NULL,
    saved_through INTEGER NOT NULL DEFAULT 0  -- the graph file holds every key up to this one
);
CREATE TABLE IF NOT EXISTS points (
    key INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the graph's id of the point
    collection TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    vector BLOB NOT NULL,  -- little-endian float32, unit length
    inserted_at REAL NOT NULL,
    payload TEXT NOT NULL,
    UNIQUE (collection, sha256)
);
"""


@functools.lru_cache(maxsize=256)
def code_distance_bound(bits: int, threshold: float) -> int:
    """The code distance that a point at cosine ≥ `threshold` exceeds with probability at most
    CODE_MISS_PROBABILITY: the farther candidates cannot be duplicates, and are not read.

    Over random hyperplanes, the codes of two vectors at angle θ differ in each bit
    independently with probability θ/π: their distance is Binomial(bits, θ/π), and a smaller
    angle (a higher cosine) only makes it smaller. The bound is that binomial's upper tail at
    the threshold's angle, summed exactly (in logarithms) from the top.
    """
    # the exact cosine is summed in float32: a point it puts at the threshold may be a hair
    # below it in exact arithmetic, and its code a bit or two away even at threshold 1
    p = math.acos(max(-1.0, min(1.0, threshold - COSINE_ROUNDING))) / math.pi
    if p <= 0.0:
        return 0
    if p >= 1.0:
        return bits
    log_p, log_q = math.log(p), math.log1p(-p)

    def log_pmf(k: int) -> float:
        return (
            math.lgamma(bits + 1)
            - math.lgamma(k + 1)
            - math.lgamma(bits - k + 1)
            + k * log_p
            + (bits - k) * log_q
        )

    tail = 0.0  # P(distance > k), summed down from k = bits
    for k in range(bits, -1, -1):
        tail += math.exp(log_pmf(k))
        if tail > CODE_MISS_PROBABILITY:
            return k
    return 0


class StoreInUseError(RuntimeError):
    """Another process has the store open: two would each keep their own copy of a duplicate."""


def _lock_folder(folder: Path) -> IO[str]:
    """Holds an exclusive lock on the folder for as long as the returned file stays open."""
    try:
        return hold_exclusive(folder / "dedup.lock", str(os.getpid()))
    except LockHeld as held:
        raise StoreInUseError(
            f"the embedded vector store in {folder} is already open in process "
            f"{held.holder or 'unknown'}: one dedup process per store, or near-duplicates would "
            "be kept once by each. For several dedup processes, set QDRANT_URL to a Qdrant "
            "server they share."
        ) from None


@dataclass
class _Collection:
    """A collection's graph and hyperplanes; `lock` keeps searches out while the graph changes."""

    name: str
    dim: int
    planes: Matrix
    graph: Index
    last_key: int = 0  # every point up to this key is in the graph
    unsaved: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def codes(self, vectors: Matrix) -> npt.NDArray[np.uint8]:
        return np.packbits((vectors @ self.planes) > 0, axis=1)


class EmbeddedVectorStore:
    """The `VectorStore` of a single process, in a folder (see the module's docstring)."""

    def __init__(self, settings: DedupSettings) -> None:
        self.settings = settings
        self.folder = settings.qdrant_path
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock_folder(self.folder)
        try:
            self._database = self.folder / "vectors.sqlite"
            self._writer = self._connect()
            self._writer.executescript(SCHEMA)
            self._readers = threading.local()
            self._write_lock = threading.Lock()  # one writer: SQLite, then the graph
            self._collections: dict[str, _Collection] = {}
            for name, dim, saved_through in self._writer.execute(
                "SELECT name, dim, saved_through FROM collections ORDER BY name"
            ).fetchall():
                self._collections[name] = self._open_collection(name, dim, saved_through)
            if (self.folder / "collection").is_dir() and (self.folder / "meta.json").exists():
                logger.warning(
                    "%s also holds points written by Qdrant's local mode (before this store), "
                    "which are not read: images stored then are not found as duplicates",
                    self.folder,
                )
        except BaseException:
            self._lock_file.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self._database, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")  # durable across a crash of the process
        return connection

    def _reader(self) -> sqlite3.Connection:
        """One connection per thread: WAL lets readers run beside the writer."""
        connection: sqlite3.Connection | None = getattr(self._readers, "connection", None)
        if connection is None:
            connection = self._connect()
            self._readers.connection = connection
        return connection

    # ---- collections
    def _graph_path(self, name: str) -> Path:
        return self.folder / f"{name}.usearch"

    def _new_graph(self, bits: int) -> Index:
        return Index(
            ndim=bits,
            metric="hamming",
            dtype="b1",
            connectivity=self.settings.index_connectivity,
            expansion_add=self.settings.index_expansion_add,
            expansion_search=self.settings.index_expansion_search,
        )

    def _open_collection(self, name: str, dim: int, saved_through: int) -> _Collection:
        """The saved graph, with the points written after it was saved added again."""
        planes = np.load(self.folder / f"{name}.planes.npy")
        graph: Index | None = None
        with contextlib.suppress(ValueError, RuntimeError):  # unreadable: rebuilt below
            graph = Index.restore(
                str(self._graph_path(name)),
                connectivity=self.settings.index_connectivity,
                expansion_add=self.settings.index_expansion_add,
                expansion_search=self.settings.index_expansion_search,
            )
        if graph is None or graph.ndim != planes.shape[1]:
            graph, saved_through = self._new_graph(planes.shape[1]), 0
        collection = _Collection(name, dim, planes, graph, last_key=saved_through)
        replayed = 0
        while True:
            rows = self._writer.execute(
                "SELECT key, vector FROM points WHERE collection = ? AND key > ? "
                "ORDER BY key LIMIT 10000",
                (name, collection.last_key),
            ).fetchall()
            if not rows:
                break
            keys = np.array([key for key, _ in rows], dtype=np.uint64)
            vectors = np.stack([np.frombuffer(blob, dtype="<f4") for _, blob in rows])
            fresh = ~np.asarray(graph.contains(keys), dtype=bool)
            if fresh.any():
                graph.add(keys[fresh], collection.codes(vectors[fresh]), threads=0)
            collection.last_key = int(keys[-1])
            replayed += int(fresh.sum())
        if replayed:
            logger.info("collection %s: %d points added to its saved graph", name, replayed)
            self._save(collection)
        return collection

    def collections(self) -> list[str]:
        return sorted(self._collections)

    def dim(self, name: str) -> int | None:
        collection = self._collections.get(name)
        return None if collection is None else collection.dim

    def ensure(self, name: str, dim: int) -> None:
        with self._write_lock:
            collection = self._collections.get(name)
            if collection is None:
                if len(self._collections) >= self.settings.max_collections:
                    raise too_many_collections(self.settings.max_collections)
                planes = (
                    np.random.default_rng()
                    .standard_normal((dim, self.settings.index_bits))
                    .astype(np.float32)
                )
                planes_path = self.folder / f"{name}.planes.npy"
                with planes_path.with_suffix(".tmp").open("wb") as output:
                    np.save(output, planes)
                os.replace(planes_path.with_suffix(".tmp"), planes_path)
                self._graph_path(name).unlink(missing_ok=True)  # a graph left by an older store
                self._writer.execute(
                    "INSERT INTO collections (name, dim) VALUES (?, ?)", (name, dim)
                )
                collection = _Collection(name, dim, planes, self._new_graph(planes.shape[1]))
                self._collections[name] = collection
        if collection.dim != dim:
            raise dimension_mismatch(name, collection.dim, dim)

    # ---- reads
    def search(
        self, name: str, vectors: Matrix, threshold: float, limit: int
    ) -> list[list[tuple[str, float]]]:
        """Per vector, (sha256, cosine) of stored points with cosine ≥ threshold, best first."""
        answers = self._search(name, vectors, threshold, limit, wait=True)
        assert answers is not None
        return answers

    def search_without_waiting(
        self, name: str, vectors: Matrix, threshold: float, limit: int
    ) -> list[list[tuple[str, float]]] | None:
        """As `search`, or None at once while a write holds the graph: for a caller on the
        event loop, which must not wait (it searches in a thread then)."""
        return self._search(name, vectors, threshold, limit, wait=False)

    def _search(
        self, name: str, vectors: Matrix, threshold: float, limit: int, wait: bool
    ) -> list[list[tuple[str, float]]] | None:
        collection = self._collections.get(name)
        if collection is None:
            return [[] for _ in vectors]
        codes = collection.codes(vectors)
        wanted = max(limit, self.settings.index_candidates)
        if not collection.lock.acquire(blocking=wait):
            return None
        try:
            scan = len(collection.graph) < self.settings.index_exact_below
            found = collection.graph.search(codes, wanted, threads=1, exact=scan)
        finally:
            collection.lock.release()
        if isinstance(found, BatchMatches):
            nearest, distances = found.keys, found.distances
            counts = [int(count) for count in found.counts]
        else:
            nearest, distances, counts = found.keys[None], found.distances[None], [len(found.keys)]
        # only the candidates whose code is near enough to be a duplicate's are read: most
        # queries of a crawl have none, and read no row
        bound = code_distance_bound(collection.planes.shape[1], threshold)
        candidates = [
            nearest[i][: counts[i]][distances[i][: counts[i]] <= bound] for i in range(len(vectors))
        ]
        stored = self._read(np.unique(np.concatenate(candidates)))
        answers: list[list[tuple[str, float]]] = []
        for query, keys in zip(vectors, candidates, strict=True):
            # a key whose point was deleted or rewritten since the graph was saved has no row
            rows = [stored[int(key)] for key in keys if int(key) in stored]
            if not rows:
                answers.append([])
                continue
            scores = np.stack([vector for _, vector in rows]) @ query
            order = np.argsort(-scores, kind="stable")
            answers.append(
                [(rows[i][0], float(scores[i])) for i in order if scores[i] >= threshold][:limit]
            )
        return answers

    def _read(self, keys: Keys) -> dict[int, tuple[str, Matrix]]:
        """sha256 and vector of the points with these keys."""
        found: dict[int, tuple[str, Matrix]] = {}
        for start in range(0, keys.size, READ_CHUNK):
            chunk = [int(key) for key in keys[start : start + READ_CHUNK]]
            placeholders = ",".join("?" * len(chunk))
            rows = self._reader().execute(
                f"SELECT key, sha256, vector FROM points WHERE key IN ({placeholders})", chunk
            )
            found.update(
                (key, (sha256, np.frombuffer(blob, dtype="<f4"))) for key, sha256, blob in rows
            )
        return found

    def count(self, name: str) -> int:
        row = (
            self._reader()
            .execute("SELECT COUNT(*) FROM points WHERE collection = ?", (name,))
            .fetchone()
        )
        return int(row[0])

    def pages(self, name: str) -> Iterator[list[StoredPoint]]:
        """Every point with its vector, a page at a time, in the order they were written."""
        after = 0
        while True:
            rows = (
                self._reader()
                .execute(
                    "SELECT key, sha256, vector, inserted_at FROM points "
                    "WHERE collection = ? AND key > ? ORDER BY key LIMIT ?",
                    (name, after, self.settings.batch_page_size),
                )
                .fetchall()
            )
            if not rows:
                return
            after = rows[-1][0]
            yield [
                StoredPoint(sha256, np.frombuffer(blob, dtype="<f4"), inserted_at)
                for _, sha256, blob, inserted_at in rows
            ]

    # ---- writes
    def upsert(
        self, name: str, sha256s: list[str], vectors: Matrix, extra: list[dict[str, Any]]
    ) -> None:
        """Writes the points (a rewritten image gets a new key) to SQLite, then to the graph."""
        collection = self._collections[name]
        now = time.time()
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                placeholders = ",".join("?" * len(sha256s))
                replaced = [
                    key
                    for (key,) in self._writer.execute(
                        "DELETE FROM points WHERE collection = ? "
                        f"AND sha256 IN ({placeholders}) RETURNING key",
                        [name, *sha256s],
                    ).fetchall()
                ]
                keys = [
                    self._writer.execute(
                        "INSERT INTO points (collection, sha256, vector, inserted_at, payload) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (name, sha256, vector.astype("<f4").tobytes(), now, json.dumps(payload)),
                    ).lastrowid
                    for sha256, vector, payload in zip(sha256s, vectors, extra, strict=True)
                ]
                self._writer.execute("COMMIT")
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            codes = collection.codes(vectors)
            new_keys = np.array(keys, dtype=np.uint64)
            with collection.lock:
                if replaced:
                    collection.graph.remove(np.array(replaced, dtype=np.uint64))
                collection.graph.add(new_keys, codes, threads=0 if len(keys) >= 64 else 1)
            collection.last_key = int(new_keys.max())
            collection.unsaved += len(keys)
            if collection.unsaved >= self.settings.snapshot_every:
                self._save(collection)

    def delete(self, name: str, sha256: str) -> bool:
        collection = self._collections[name]
        with self._write_lock:
            row = self._writer.execute(
                "DELETE FROM points WHERE collection = ? AND sha256 = ? RETURNING key",
                (name, sha256),
            ).fetchone()
            if row is None:
                return False
            with collection.lock:
                collection.graph.remove(int(row[0]))
        return True

    def drop(self, name: str) -> bool:
        with self._write_lock:
            collection = self._collections.get(name)
            if collection is None:
                return False
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                self._writer.execute("DELETE FROM points WHERE collection = ?", (name,))
                self._writer.execute("DELETE FROM collections WHERE name = ?", (name,))
                self._writer.execute("COMMIT")
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            del self._collections[name]
            with collection.lock:  # a search still holding it ends first
                self._graph_path(name).unlink(missing_ok=True)
                (self.folder / f"{name}.planes.npy").unlink(missing_ok=True)
        return True

    def _save(self, collection: _Collection) -> None:
        """Writes the graph next to the old one, then swaps them: a crash keeps one whole."""
        path = self._graph_path(collection.name)
        temporary = path.with_suffix(".tmp")
        collection.graph.save(str(temporary))
        os.replace(temporary, path)
        self._writer.execute(
            "UPDATE collections SET saved_through = ? WHERE name = ?",
            (collection.last_key, collection.name),
        )
        collection.unsaved = 0

    def close(self) -> None:
        with self._write_lock:
            for collection in self._collections.values():
                if collection.unsaved:
                    self._save(collection)
            self._writer.close()
        self._lock_file.close()

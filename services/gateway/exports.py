"""Dataset export: the curated images written as WebDataset shards, Parquet and a dataset card.

One job per export, run in a thread (it reads the store and writes files): the records are
read a page at a time and streamed into the writer, so memory holds one shard at most. Its
progress (records written, shards) is on the export's row; a try run again writes the export
again from the start, under the same shard names.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, dataclass

from sqlalchemy.engine import Engine

from services.common.database import utcnow
from services.common.errors import ServiceError, UnavailableError
from services.common.states import FINISHED, JobStatus
from services.common.storage import ObjectStore, S3Settings
from services.gateway import export_records
from services.gateway.dataset_writer import DatasetWriter, ExportSummary
from services.gateway.schemas import ExportFilters

logger = logging.getLogger(__name__)


def export_job_id(export_id: str) -> str:
    return f"export:{export_id}"


@dataclass
class ExportJobs:
    engine: Engine
    store: ObjectStore
    s3: S3Settings | None

    async def run(self, export_id: str, attempt: int, final: bool) -> str:
        """Writes the export; its status. `UnavailableError` (the store or the database is
        away) has it tried again later."""
        return await asyncio.to_thread(self._write, export_id, attempt, final)

    def stop(self, export_id: str, final: bool, reason: str) -> str:
        status = JobStatus.FAILED if final else JobStatus.QUEUED
        row = export_records.update(self.engine, export_id, status=status, error=reason)
        return row.status if row is not None else JobStatus.FAILED

    def _write(self, export_id: str, attempt: int, final: bool) -> str:
        found = export_records.export(self.engine, export_id)
        if found is None:
            return JobStatus.FAILED
        if found.status in FINISHED:
            return found.status
        filters = found.filters
        again = found.started_at is not None  # an earlier try may have published shards
        total = export_records.count_matching(self.engine, filters)
        export_records.started(self.engine, export_id, attempt, total)
        try:
            summary = self._stream(
                export_id, found.destination, found.records_per_shard, filters, again
            )
        except UnavailableError as exc:
            if not final:
                export_records.update(self.engine, export_id, status=JobStatus.QUEUED)
                raise
            return self._failed(export_id, exc.message)
        except ServiceError as exc:  # the destination refused it, or a record could not go
            return self._failed(export_id, f"{exc.code}: {exc.message}")
        export_records.update(
            self.engine,
            export_id,
            status=JobStatus.DONE,
            written=summary.records,
            shards=summary.shards,
            size_bytes=summary.bytes,
            summary=json.dumps(asdict(summary)),
            finished_at=utcnow(),
        )
        logger.info(
            "export %s: %d records in %d shards", export_id, summary.records, summary.shards
        )
        return JobStatus.DONE

    def _stream(
        self,
        export_id: str,
        destination: str,
        records_per_shard: int,
        filters: ExportFilters,
        again: bool,
    ) -> ExportSummary:
        """`again`: a later try, over the shards an earlier one published."""
        name = f"seavl export {export_id}"
        with DatasetWriter(destination, self.s3, records_per_shard, name, again) as writer:
            for page in export_records.matching_pages(self.engine, filters):
                for record in page:
                    writer.add(record, self.store.get(record.sha256))
                export_records.update(
                    self.engine, export_id, written=writer.records, shards=writer.shards
                )
        return writer.close()

    def _failed(self, export_id: str, reason: str) -> str:
        logger.warning("export %s failed: %s", export_id, reason)
        export_records.update(
            self.engine, export_id, status=JobStatus.FAILED, error=reason, finished_at=utcnow()
        )
        return JobStatus.FAILED

"""The states of the gateway's queued work (an image's processing, a caption, a crawl, an export),
as one enum; dedup's batch jobs, run in a thread of one replica, have their own (BatchJobStatus)."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"  # images only: a caption goes from queued to its end
    DONE = "done"
    FAILED = "failed"


# A record in one of these is never written again by its job.
FINISHED = (JobStatus.DONE, JobStatus.FAILED)
UNFINISHED = (JobStatus.QUEUED, JobStatus.PROCESSING)

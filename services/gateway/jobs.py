"""What the gateway's queued jobs are and what they end in; shared by the image pipeline, the
caption jobs and both kinds of queue."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.schemas import EmbeddedImage


def image_job_id(image_id: str) -> str:
    """The key of an image's processing job (one per image, whichever queue runs it)."""
    return f"process:{image_id}"


def gave_up(attempt: int, reason: str) -> str:
    """Why a job failed on its last try."""
    return f"gave up after {attempt} tries: {reason}"


def gave_up_waiting(window_seconds: float, reason: str) -> str:
    """Why a job failed when a dependency stayed down for its whole retry window."""
    return f"gave up after retrying for {window_seconds:g} s: {reason}"


class ImageGone(Exception):
    """The record no longer exists (or was asked again since): nothing to do."""


@dataclass(frozen=True)
class Job:
    """Processing of one image (embed, score, dedup), keyed by its sha256."""

    image_id: str
    attempt: int
    final: bool
    request_id: str | None = None  # of the request that queued the job
    # the embedding the upload's privacy pass answered for the stored bytes, if it did
    embedded: EmbeddedImage | None = None


@dataclass(frozen=True)
class CaptionJob:
    image_id: str
    language: str
    request: int  # the caption row's request number when the job was queued

    @property
    def job_id(self) -> str:
        return f"caption:{self.image_id}:{self.language}:{self.request}"


@dataclass(frozen=True)
class Processed:
    """An image's processing ended (done or failed); the captions asked for it can start."""

    status: str
    captions: tuple[CaptionJob, ...] = ()


# What a processing job ends in: `Processed`, or the exception its caller raises (retry later,
# or gone).
JobOutcome = Processed | Exception


class TryStopped(Exception):
    """A try stopped from outside (past its time limit), to be retried: it counts against
    `max_tries`, as a try that finds a dependency down does not."""

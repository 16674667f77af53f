"""One log format for every service, so operators can grep them alike."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str = "info") -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    # one line per outgoing request would drown the services' own logs
    logging.getLogger("httpx").setLevel(logging.WARNING)

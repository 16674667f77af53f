"""The dedup service's own entry: `python -m services.dedup` and `seavl serve dedup` run it."""

from services.common.serve import serve
from services.dedup.app import create_app
from services.dedup.config import DedupSettings


def main() -> None:
    serve("dedup", create_app, DedupSettings)


if __name__ == "__main__":
    main()

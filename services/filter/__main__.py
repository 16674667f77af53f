"""The filter's own entry: `python -m services.filter` and `seavl serve filter` run it."""

from services.common.serve import serve
from services.filter.app import create_app
from services.filter.config import FilterSettings


def main() -> None:
    serve("filter", create_app, FilterSettings)


if __name__ == "__main__":
    main()

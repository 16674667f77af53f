"""The captioner's own entry: `python -m services.captioner` and `seavl serve captioner` run it."""

from services.captioner.app import create_app
from services.captioner.config import CaptionerSettings
from services.common.serve import serve


def main() -> None:
    serve("captioner", create_app, CaptionerSettings)


if __name__ == "__main__":
    main()

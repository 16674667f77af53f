"""The embedder's own entry: `python -m services.embedder` and `seavl serve embedder` run it."""

from services.common.serve import serve
from services.embedder.app import create_app
from services.embedder.config import EmbedderSettings


def main() -> None:
    serve("embedder", create_app, EmbedderSettings)


if __name__ == "__main__":
    main()

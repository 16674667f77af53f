"""The gateway's own entry: `python -m services.gateway` and `seavl serve gateway` run it."""

from services.common.serve import serve
from services.gateway.app import create_app
from services.gateway.config import GatewaySettings


def main() -> None:
    serve("gateway", create_app, GatewaySettings)


if __name__ == "__main__":
    main()

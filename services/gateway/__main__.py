"""`python -m services.gateway` serves the gateway with its settings."""

from services.cli import main

if __name__ == "__main__":
    main(["serve", "gateway"])

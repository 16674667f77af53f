"""`python -m services.dedup` serves the dedup service with its settings."""

from services.cli import main

if __name__ == "__main__":
    main(["serve", "dedup"])

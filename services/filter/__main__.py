"""`python -m services.filter` serves the filter with its settings."""

from services.cli import main

if __name__ == "__main__":
    main(["serve", "filter"])

"""`python -m services.captioner` serves the captioner with its settings."""

from services.cli import main

if __name__ == "__main__":
    main(["serve", "captioner"])

"""`python -m services.embedder` serves the embedder with its settings."""

from services.cli import main

if __name__ == "__main__":
    main(["serve", "embedder"])

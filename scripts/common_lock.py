"""requirements/common.txt: the pins every CPU image's lock shares, to the letter (version and
hashes), for the Dockerfile's shared layer: installed once below every service's own lock, so
the six images share it instead of six copies of FastAPI, pydantic, SQLAlchemy, numpy...

    python scripts/common_lock.py           # write it (scripts/lock.sh does, after the locks)
    python scripts/common_lock.py --check   # exit 1 if it is not what the locks say (a test)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICE_LOCKS = ("gateway", "embedder", "filter", "dedup", "captioner")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
HEADER = (
    "# The pins every service image's lock shares (scripts/common_lock.py, from the locks that\n"
    "# scripts/lock.sh writes): the Dockerfile's shared layer. Do not edit.\n"
)


def pinned_blocks(text: str) -> dict[str, str]:
    """Each pin with its hash lines, by package name (comments left out)."""
    blocks: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        pin = PIN.match(line)
        if pin:
            current = pin.group(1).lower()
            blocks[current] = [line.rstrip(" \\")]
        elif current is not None and line.strip().startswith("--hash"):
            blocks[current].append(line.strip().rstrip(" \\"))
        elif not line.startswith(" "):
            current = None
    return {name: " \\\n    ".join(lines) for name, lines in blocks.items()}


def common_lock(root: Path = ROOT) -> str:
    locks = [pinned_blocks((root / "requirements" / f"{n}.txt").read_text()) for n in SERVICE_LOCKS]
    shared = [
        block for name, block in locks[0].items() if all(lock.get(name) == block for lock in locks)
    ]
    return HEADER + "".join(f"{block}\n" for block in shared)


def main() -> int:
    target = ROOT / "requirements" / "common.txt"
    wanted = common_lock()
    if "--check" in sys.argv[1:]:
        if not target.is_file() or target.read_text() != wanted:
            print(f"{target} is not what the locks share: run scripts/lock.sh", file=sys.stderr)
            return 1
        return 0
    target.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

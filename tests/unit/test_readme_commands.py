"""The README's commands, pasted from the repository's root, leave no file in the checkout: what
they write and send lies under var/, which git ignores (issue 10: `coffee.jpg` was left
untracked)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHELL_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)
# files a command saves (Pillow's .save), sends (curl -F x=@file) or reads (base64 file)
FILES = re.compile(r"\.save\('([^']+)'\)|=@([^\s\"]+)|base64 -w0 ([^\s)\"]+)")


def test_the_readme_commands_write_and_send_files_under_var_only() -> None:
    blocks = SHELL_BLOCK.findall((ROOT / "README.md").read_text())
    files = {name for block in blocks for match in FILES.findall(block) for name in match if name}
    assert {"var/cat.jpg", "var/coffee.jpg"} <= files
    outside = sorted(name for name in files if not name.startswith("var/"))
    assert outside == [], f"README commands leave files in the checkout: {outside}"
    assert "var/" in (ROOT / ".gitignore").read_text().splitlines()

"""The README's framework examples are the files the integration tests run: each example in
examples/ appears in the README verbatim, so what a user copies is what was tested."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted([*ROOT.glob("examples/*.py"), ROOT / "examples/node/agent.mjs"])


def test_every_example_is_in_the_readme_verbatim():
    blocks = {match.group(1) for match in re.finditer(r"```(?:python|js)\n(.*?)```", (ROOT / "README.md").read_text(),
                                                        re.S)}
    assert len(EXAMPLES) >= 4
    missing = [str(path.relative_to(ROOT)) for path in EXAMPLES if path.read_text() not in blocks]
    assert not missing, f"not in the README verbatim (paste the file as a fenced block): {missing}"

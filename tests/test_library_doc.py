"""docs/LIBRARY.md's example runs as written (so the document cannot go stale)."""

from __future__ import annotations

import re

import pytest

from tests.helpers import REPO


def test_library_example_runs(capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO / "docs" / "LIBRARY.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "docs/LIBRARY.md lost its example"
    monkeypatch.chdir(REPO)   # the example names the bundled sample from the repository root
    exec(compile(blocks[0], str(REPO / "docs" / "LIBRARY.md"), "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "YES"
    assert lines[1] == "shifted per patient"
    assert lines[-1].startswith("not de-identified: truncated")

from __future__ import annotations

import re

from conftest import ROOT


def test_readme_import_example_runs(spark, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    example = next(b for b in blocks if "from sparktweet import" in b)
    monkeypatch.chdir(ROOT)
    exec(compile(example, "README.md", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    assert "BAG-261120-" in out  # the shipped model files the bag complaint as a Baggage ticket
    assert "CITY" in out and "Denver" in out

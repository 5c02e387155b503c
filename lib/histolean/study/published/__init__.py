"""The papers' published numbers, as data, for side-by-side comparison.

One YAML file per paper in this folder (``nar.yaml``, ``pruning.yaml``, ...).
Each file maps a table name to ``{source: "...", note: "...", rows: [ {...}, ... ]}``
where ``source`` says where in the paper the numbers are (e.g. "Table 3").
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

_HERE = Path(__file__).parent


@cache
def papers() -> dict[str, dict]:
    """All published tables, keyed by paper file stem."""
    return {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) or {} for p in sorted(_HERE.glob("*.yaml"))}


def table(paper: str, name: str) -> list[dict]:
    """Rows of one published table, e.g. ``table("nar", "table3_resnet50v2")``."""
    try:
        return list(papers()[paper][name]["rows"])
    except KeyError:
        known = {p: sorted(t) for p, t in papers().items()}
        raise KeyError(f"no published table {paper!r}/{name!r}; known: {known}") from None


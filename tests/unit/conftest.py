"""Fixtures of the unit tier."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

# The parameters every study notebook declares (the runner injects them); a toy adds its own after these.
_STUDY_PARAMETERS = 'profile = "smoke"\noutput_dir = "../outputs/interactive"\ndata_root = ""\nseed = 0'


def _write_toy_notebook(path: Path, body: str, *, parameters: str = "", title: str | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(_STUDY_PARAMETERS + (f"\n{parameters}" if parameters else ""))
    params.metadata["tags"] = ["parameters"]
    nb.cells = ([nbformat.v4.new_markdown_cell(title)] if title else []) + [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.write_text(nbformat.writes(nb), encoding="utf-8")
    return path


@pytest.fixture()
def toy_notebook():
    """``toy_notebook(path, body, parameters="value = 1", title="# Toy")`` writes a study notebook for the
    runner tests: an optional markdown title, the tagged parameters cell (the study's four parameters, then
    ``parameters``) and one code cell ``body``; returns the path."""
    return _write_toy_notebook

"""Where things are: the project checkout (``params/``, ``notebooks/``) and the data root."""

from __future__ import annotations

import os
import re
from pathlib import Path


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The folder holding ``params/`` and ``notebooks/``: $HISTOLEAN_ROOT, else the
    nearest parent of ``start`` (default: cwd) that has both, else the source checkout."""
    if os.environ.get("HISTOLEAN_ROOT"):
        return Path(os.environ["HISTOLEAN_ROOT"]).resolve()
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "params").is_dir() and (folder / "notebooks").is_dir():
            return folder
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "params").is_dir():
        return checkout
    raise FileNotFoundError(f"no params/ and notebooks/ folders in {here} or its parents; "
                            f"run from the histolean checkout or set HISTOLEAN_ROOT")


def notebook_path(root: Path, benchmark: str) -> Path:
    """``notebooks/NN_<benchmark>.ipynb``: the number gives the reading order (data, cost, methods,
    experiments), the benchmark keeps its name. An unnumbered ``<benchmark>.ipynb`` works too."""
    folder = Path(root) / "notebooks"
    numbered = sorted(folder.glob(f"[0-9][0-9]_{benchmark}.ipynb"))
    return numbered[0] if numbered else folder / f"{benchmark}.ipynb"


def benchmark_name(path: Path) -> str:
    """The benchmark a notebook file runs: its name without the reading-order number."""
    return re.sub(r"^\d\d_", "", Path(path).stem)


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data directory: ``root`` if given, else ``$HISTOLEAN_DATA``, else the project's ``data/``
    (found from the working directory upwards, so notebooks running in ``notebooks/`` see it too),
    else ``./data``."""
    if root not in (None, ""):
        return Path(root).expanduser()
    env = os.environ.get("HISTOLEAN_DATA")
    if env:
        return Path(env).expanduser()
    try:
        return project_root() / "data"
    except FileNotFoundError:
        return Path("data")

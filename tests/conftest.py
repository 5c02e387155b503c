"""Shared fixtures: the real data root and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _real_data_root() -> Path | None:
    for candidate in (os.environ.get("HISTOLEAN_DATA"), REPO.parent / "shared" / "data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real data subsets ($HISTOLEAN_DATA); tests that need them skip, saying why, without them."""
    root = _real_data_root()
    if root is None:
        pytest.skip("real data subsets not found: set HISTOLEAN_DATA to the shared data folder")
    return root


def write_patch_folder(real_data: Path, dest: Path, layout: str = "classes", per_class: int = 12,
                       groups: int = 6) -> Path:
    """A user's patch folder built from real PCam patches, re-saved as PNG, in one of the layouts of
    ``histolean.data.user_patches``: "classes" (negative/, positive/), "splits" (train|valid|test/0|1/,
    PCam's own splits) or "csv" (patches/ + labels.csv with path,label,group; ``groups`` made-up slide ids,
    each holding both classes). Returns the folder."""
    from PIL import Image

    def sources(split, label, n):
        return sorted((real_data / "pcam" / split / str(label)).glob("*.jpg"))[:n]

    rows = []
    for label in (0, 1):
        if layout == "splits":
            for split, n in (("train", per_class), ("valid", per_class // 2), ("test", per_class // 2)):
                for src in sources(split, label, n):
                    (dest / split / str(label)).mkdir(parents=True, exist_ok=True)
                    Image.open(src).save(dest / split / str(label) / f"{src.stem}.png")
            continue
        for i, src in enumerate(sources("train", label, per_class)):
            if layout == "classes":
                target = dest / ("negative", "positive")[label] / f"{src.stem}.png"
            else:
                target = dest / "patches" / f"{label}_{src.stem}.png"
                rows.append(f"patches/{target.name},{label},slide{i % groups}")
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.open(src).save(target)
    if layout == "csv":
        (dest / "labels.csv").write_text("path,label,group\n" + "\n".join(rows) + "\n")
    return dest


@pytest.fixture()
def patch_folder(real_data, tmp_path):
    """``patch_folder(layout, per_class=12, name=...)``: see :func:`write_patch_folder` (under tmp_path)."""
    def make(layout: str = "classes", per_class: int = 12, name: str | None = None, groups: int = 6) -> Path:
        return write_patch_folder(real_data, tmp_path / (name or layout), layout, per_class, groups)
    return make

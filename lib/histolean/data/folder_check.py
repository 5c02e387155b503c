"""What ``histolean data check`` and the user-folder loaders share: a list of findings and problems.

The checks live beside each reader (:mod:`histolean.data.user_patches`, :mod:`histolean.data.user_nuclei`)
and fill one :class:`FolderReport`; the CLI prints it, a loader raises its blocking problems as one
:class:`DataError` (so a notebook stops with the same message) and warns the rest.
Also here: the optional ``dataset.json`` of a user folder (``{"mpp": 0.5, "patch_um": 50}``).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .common import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
INFO_FILE = "dataset.json"


@dataclass
class Problem:
    path: str
    message: str
    fix: str
    blocking: bool

    def __str__(self) -> str:
        return f"{self.path}: {self.message}. {self.fix}"


@dataclass
class FolderReport:
    """What was found (``found``: printable lines) and every problem, blocking or not."""

    path: str
    kind: str
    found: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def block(self, path, message: str, fix: str) -> None:
        self.problems.append(Problem(str(path), message, fix, True))

    def warn(self, path, message: str, fix: str) -> None:
        self.problems.append(Problem(str(path), message, fix, False))

    @property
    def blocking(self) -> list[Problem]:
        return [p for p in self.problems if p.blocking]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if not p.blocking]

    @property
    def ok(self) -> bool:
        return not self.blocking

    def format(self) -> str:
        lines = [f"{self.path} ({self.kind}):"] + [f"  {line}" for line in self.found]
        lines += [f"ERROR   {p}" for p in self.blocking] + [f"WARNING {p}" for p in self.warnings]
        verdict = (f"{len(self.blocking)} blocking problem(s): fix them and run `histolean data check` again"
                   if self.blocking else "usable" + (f" ({len(self.warnings)} warning(s))" if self.warnings else ""))
        return "\n".join(lines + [verdict])

    def raise_or_warn(self) -> None:
        """For the loaders: every blocking problem in one DataError, each warning as a UserWarning."""
        if self.blocking:
            shown = "; ".join(str(p) for p in self.blocking[:5])
            more = f" (and {len(self.blocking) - 5} more)" if len(self.blocking) > 5 else ""
            raise DataError(f"{shown}{more}. Run `histolean data check {self.path} --kind {self.kind}` "
                            "for the full list")
        for p in self.warnings:
            warnings.warn(str(p), stacklevel=3)


def read_info(folder: str | os.PathLike) -> dict:
    """The folder's optional ``dataset.json`` (``mpp``, ``patch_um``); {} without one."""
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
        for key in ("mpp", "patch_um"):
            if key in info and not (isinstance(info[key], (int, float)) and info[key] > 0):
                raise ValueError(f"{key} must be a positive number, got {info[key]!r}")
    except ValueError as exc:
        raise DataError(f"{path}: cannot read it ({exc}). Write e.g. {{\"mpp\": 0.5, \"patch_um\": 50}}") from None
    return info


def header(path: Path) -> tuple[tuple[int, int], str] | str:
    """((width, height), mode) of an image from its header, or the reason it cannot be opened."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.size, img.mode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"cannot open the image ({exc})"


def decodes(path: Path) -> str | None:
    """None when the whole image decodes, else why not (truncated files pass the header)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
        return None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"cannot decode the image (corrupt or truncated file: {exc})"

"""The one cache/resume helper: a result stored beside the key that made it, found again only for that key.

::

    key = cache.fingerprint({"variant": v.id, "epochs": 3}, code=[train, nar])
    row = cache.load(run_dir / "run0.json", key)          # None: missing, other key, or corrupt
    if row is None:
        row = train_it()
        cache.save(run_dir / "run0.json", key, row)
    # or, in one call:
    row = cache.cached(run_dir / "run0.json", key, train_it)

A record is written atomically (a killed run leaves the old record or none, never half of one).
The file's suffix picks the format: ``.json`` for plain data, ``.pt`` for tensors (torch, loaded
with ``weights_only``). One policy for a record that cannot be read: it is moved aside to
``<name>.corrupt`` with a warning naming the file, and the result is computed again.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable

from histolean.util import atomic

KEY_FIELD = "cache_key"


class CorruptRecordWarning(UserWarning):
    """A cache record could not be read; it was moved aside and will be recomputed."""


def fingerprint(parameters: Any, code: Iterable[ModuleType | Callable] = ()) -> str:
    """A short hash of ``parameters`` (anything JSON can write, sorted keys) and of the source of ``code``
    (modules or functions whose change must invalidate the result)."""
    h = hashlib.sha256(json.dumps(parameters, sort_keys=True, default=str).encode())
    for obj in code:
        h.update(inspect.getsource(obj).encode())
    return h.hexdigest()[:16]


def _read(path: Path) -> Any:
    if path.suffix == ".pt":
        import torch

        return torch.load(path, map_location="cpu", weights_only=True)
    return json.loads(path.read_text(encoding="utf-8"))


def move_aside(path: str | os.PathLike, err: Exception, *, stacklevel: int = 3) -> Path:
    """Move an unreadable record or file to `<name>.corrupt` with a warning naming it; returns the new path."""
    path = Path(path)
    aside = path.with_name(path.name + ".corrupt")
    os.replace(path, aside)
    warnings.warn(f"{path}: unreadable ({type(err).__name__}: {err}); moved to {aside.name}, recomputing",
                  CorruptRecordWarning, stacklevel=stacklevel)
    return aside


def load(path: str | os.PathLike, key: str) -> Any | None:
    """The value stored at ``path`` for ``key``; None when there is none, it is for another key, or the
    file is corrupt (then moved aside, with a warning)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        record = _read(path)
        if not isinstance(record, dict) or KEY_FIELD not in record or "value" not in record:
            raise ValueError("not a histolean cache record")
    except Exception as err:  # truncated, foreign or from an old format: one policy for all
        move_aside(path, err)
        return None
    return record["value"] if record[KEY_FIELD] == key else None


def save(path: str | os.PathLike, key: str, value: Any) -> Path:
    """Store ``value`` for ``key`` at ``path``, atomically."""
    path = Path(path)
    record = {KEY_FIELD: key, "value": value}
    if path.suffix == ".pt":
        import torch

        with atomic.atomic_path(path) as tmp:
            torch.save(record, tmp)
    else:
        atomic.write_text(path, json.dumps(record, sort_keys=True, default=float))
    return path


def cached(path: str | os.PathLike, key: str, compute: Callable[[], Any]) -> Any:
    """``load`` or, when nothing usable is stored, ``compute()`` then ``save``."""
    value = load(path, key)
    if value is None:
        value = compute()
        save(path, key, value)
    return value


def forget(path: str | os.PathLike) -> None:
    """Remove a record (before recomputing with other settings, so that a kill cannot leave it trusted)."""
    Path(path).unlink(missing_ok=True)

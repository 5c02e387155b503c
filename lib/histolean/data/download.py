"""``histolean data fetch NAME``: download a dataset from its official source.

Each file is streamed into ``<file>.part``; an interrupted download resumes from the
bytes already there with an HTTP ``Range`` request (a server that ignores Range is
answered by starting over). The finished ``.part`` is checked against the published
checksum, then renamed over the target with ``os.replace`` (atomic: the target is either
absent or complete). On a mismatch the ``.part`` is deleted and the error names the file,
the expected and the actual digest. Archives (.zip, .tar.*) are unpacked into a temporary
folder next to the destination and moved into place; when an archive holds a single
top-level folder, its contents go straight into the destination.

What to download, and the checksums, are in each dataset's record (:mod:`.registry`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from histolean.util import atomic
from .common import DataError, data_error, data_root
from .registry import DATASETS, how_to_get

CHUNK = 1 << 20
USER_AGENT = "histolean-data-fetch/0.1 (+https://github.com/)"


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, sha256: str | None = None, md5: str | None = None, shown_name: str | None = None) -> None:
    """Raise a DataError naming the file when its digest differs from the expected one."""
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected:
            actual = file_digest(path, algorithm)
            if actual.lower() != expected.lower():
                raise data_error(shown_name or path,
                                 f"{algorithm} checksum mismatch: expected {expected}, got {actual}",
                                 "The download is corrupt or the file changed upstream; it was deleted, run the "
                                 "fetch again (or report the new checksum)")


def download_file(url: str, target: str | os.PathLike, sha256: str | None = None, md5: str | None = None,
                  progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``target`` with resume of ``target.part`` and checksum verification."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the .part is already complete
            response = None
        else:
            raise DataError(f"{url}: HTTP {exc.code} {exc.reason} while downloading {target.name}. "
                            "Check the URL (or --url-base) and try again") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"{url}: cannot connect ({getattr(exc, 'reason', exc)}) while downloading {target.name}. "
                        f"Check your connection; run the fetch again to resume from {have} bytes") from None
    if response is not None:
        with response:
            resumed = response.status == 206
            if have and not resumed:
                have = 0  # the server ignored Range and sends the whole file
            total = response.headers.get("Content-Length")
            total = int(total) + have if total is not None else None
            _stream(response, part, append=resumed, start=have, total=total, progress=progress, name=target.name)
    try:
        verify(part, sha256, md5, shown_name=target)
    except DataError:
        part.unlink(missing_ok=True)
        raise
    if not (sha256 or md5):
        print(f"histolean.data: {target.name}: no published checksum; sha256 {file_digest(part, 'sha256')}")
    os.replace(part, target)  # atomic: the target is absent or complete
    return target


def _stream(response, part: Path, *, append: bool, start: int, total: int | None, progress: bool, name: str) -> None:
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=name)
    try:
        with open(part, "ab" if append else "wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    except (OSError, ConnectionError) as exc:
        raise DataError(f"{part}: download of {name} interrupted ({exc}). Run the fetch again to resume") from None
    finally:
        if bar is not None:
            bar.close()


def unpack(archive: Path, dest: Path) -> None:
    """Extract a .zip / .tar.* archive into ``dest`` safely (no paths outside it)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", dir=dest))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    resolved = (staging / member).resolve()
                    if not resolved.is_relative_to(staging.resolve()):
                        raise data_error(archive, f"member {member!r} points outside the archive folder",
                                         "Refusing to unpack it; download the archive from the official source")
                zf.extractall(staging)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                try:
                    tf.extractall(staging, filter="data")
                except tarfile.FilterError as exc:
                    raise data_error(archive, f"unsafe member ({exc})", "Refusing to unpack it") from None
        else:
            raise data_error(archive, "is neither a zip nor a tar archive", "Delete it and fetch again")
        entries = [p for p in staging.iterdir() if p.name not in ("__MACOSX",)]
        if len(entries) == 1 and entries[0].is_dir():
            entries = list(entries[0].iterdir())  # a single top-level folder: use its contents
        for entry in entries:
            destination = dest / entry.name
            if destination.exists():
                shutil.rmtree(destination) if destination.is_dir() else destination.unlink()
            os.replace(entry, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch(name: str, dest: str | os.PathLike | None = None, base_url: str | None = None,
          progress: bool = True) -> Path:
    """Download dataset ``name`` into ``dest`` (default ``<data root>/<name>``); returns ``dest``.

    ``base_url`` replaces the directory part of every official URL (a mirror, or a local
    server in tests). Files already present with a matching checksum are skipped.
    """
    source = DATASETS.get(name)
    if source is None or source.derived:
        known = sorted(n for n, d in DATASETS.items() if not d.derived)
        raise ValueError(f"fetch: unknown dataset {name!r}; known: {known}")
    if not source.files:
        raise DataError(f"{name}: {source.obtain}. {how_to_get(name)}")
    dest = Path(dest) if dest is not None else data_root() / name
    dest.mkdir(parents=True, exist_ok=True)
    for remote in source.files:
        url = f"{base_url.rstrip('/')}/{remote.filename}" if base_url else remote.url
        target = dest / remote.filename
        marker = dest / f".{remote.filename}.unpacked"
        if remote.unpack and marker.is_file():
            continue
        if target.is_file() and (remote.sha256 or remote.md5):
            try:
                verify(target, remote.sha256, remote.md5)
                continue
            except DataError:
                target.unlink()
        elif target.is_file():
            continue
        if source.download_note and progress:
            print(f"histolean.data: {name}: {source.download_note}")
        download_file(url, target, sha256=remote.sha256, md5=remote.md5, progress=progress)
        if remote.unpack:
            unpack(target, dest)
            atomic.write_text(marker, "unpacked\n")
            target.unlink()
    return dest

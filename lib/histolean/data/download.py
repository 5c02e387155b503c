"""``histolean data fetch NAME``: download a dataset from its official source.

Each file is streamed into ``<file>.part``; an interrupted download resumes from the
bytes already there with an HTTP ``Range`` request (a server that ignores Range is
answered by starting over). The finished ``.part`` is checked against the published
checksum, then renamed over the target with ``os.replace`` (atomic: the target is either
absent or complete). On a mismatch the ``.part`` is deleted and the error names the file,
the expected and the actual digest. Archives (.zip, .tar.*) are unpacked into a temporary
folder next to the destination and moved into place; when an archive holds a single
top-level folder, its contents go straight into the destination.

Checksums: PCam md5s as published in the basveeling/pcam README; the CMU-1-Small-Region
sha256 was computed from a byte-exact copy (git blob 1125dcd0...). Where no checksum is
published the sha256 of the download is printed for the record.
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
from dataclasses import dataclass, field
from pathlib import Path

from .. import atomic
from .common import DataError, data_error, data_root

CHUNK = 1 << 20
USER_AGENT = "histolean-data-fetch/0.1 (+https://github.com/)"


@dataclass(frozen=True)
class RemoteFile:
    url: str
    filename: str
    sha256: str | None = None
    md5: str | None = None
    unpack: bool = False


@dataclass(frozen=True)
class RemoteDataset:
    name: str
    files: tuple[RemoteFile, ...] = ()
    note: str = ""
    extra: dict = field(default_factory=dict)


_PCAM_MD5 = {  # basveeling/pcam README
    "camelyonpatch_level_2_split_train_x.h5.gz": "1571f514728f59376b705fc836ff4b63",
    "camelyonpatch_level_2_split_train_y.h5.gz": "35c2d7259d906cfc8143347bb8e05be7",
    "camelyonpatch_level_2_split_valid_x.h5.gz": "d8c2d60d490dbd479f8199bdfa0cf6ec",
    "camelyonpatch_level_2_split_valid_y.h5.gz": "60a7035772fbdb7f34eb86d4420cf66a",
    "camelyonpatch_level_2_split_test_x.h5.gz": "d5b63470df7cfa627aeec8b9dc0c066e",
    "camelyonpatch_level_2_split_test_y.h5.gz": "2b85f58b927af9964a4c15b8f7e8f179",
}

REMOTE: dict[str, RemoteDataset] = {
    "pcam": RemoteDataset("pcam", tuple(
        RemoteFile(f"https://zenodo.org/records/2546921/files/{name}?download=1", name, md5=md5)
        for name, md5 in _PCAM_MD5.items()),
        note="about 7.5 GB. Third-party reports say Zenodo's valid/test files were replaced in 2019; a "
             "checksum mismatch on those names may be that, not a broken download."),
    "idc": RemoteDataset("idc", (RemoteFile("http://andrewjanowczyk.com/wp-static/IDC_regular_ps50_idx5.zip",
                                            "IDC_regular_ps50_idx5.zip", unpack=True),),
                         note="about 1.6 GB; no checksum is published"),
    "tnbc": RemoteDataset("tnbc", (RemoteFile("https://zenodo.org/records/1175282/files/TNBC_NucleiSegmentation.zip"
                                              "?download=1", "TNBC_NucleiSegmentation.zip", unpack=True),),
                          note="no checksum is published"),
    "crchistophenotypes": RemoteDataset("crchistophenotypes", (RemoteFile(
        "https://warwick.ac.uk/fac/cross_fac/tia/data/crchistolabelednucleihe/crchistophenotypes_2016_04_28.zip",
        "crchistophenotypes_2016_04_28.zip", unpack=True),),
        note="research use only; no checksum is published"),
    "wsi": RemoteDataset("wsi", (RemoteFile(
        "https://openslide.cs.cmu.edu/download/openslide-testdata/Aperio/CMU-1-Small-Region.svs",
        "CMU-1-Small-Region.svs", sha256="ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"),)),
    "monuseg": RemoteDataset("monuseg", note="no direct download (Google Drive links on the challenge page)"),
    "til": RemoteDataset("til", note="clone https://github.com/SBU-BMI/u24_lymphocyte"),
}


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
                raise data_error(shown_name or path, f"{algorithm} checksum mismatch: expected {expected}, got {actual}",
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
    from .status import how_to_get

    if name not in REMOTE:
        raise ValueError(f"fetch: unknown dataset {name!r}; known: {sorted(REMOTE)}")
    source = REMOTE[name]
    if not source.files:
        raise DataError(f"{name}: {source.note}. {how_to_get(name)}")
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
        if source.note and progress:
            print(f"histolean.data: {name}: {source.note}")
        download_file(url, target, sha256=remote.sha256, md5=remote.md5, progress=progress)
        if remote.unpack:
            unpack(target, dest)
            atomic.write_text(marker, "unpacked\n")
            target.unlink()
    return dest

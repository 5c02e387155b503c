"""`histolean data fetch`: resume, checksums, unpacking. Only ever talks to a server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from histolean import data
from histolean.data import DataError, download, registry
from histolean.data.registry import RemoteFile

PAYLOAD = np.random.default_rng(0).bytes(300_000)


class _Server:
    """Serves ``files`` (name -> bytes); honours ``Range: bytes=N-`` unless ``ignore_range``."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                name = self.path.split("?")[0].rsplit("/", 1)[-1]  # any folder: a mirror layout
                outer.requests.append((name, self.headers.get("Range")))
                body = outer.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                range_header = self.headers.get("Range")
                if range_header and not outer.ignore_range:
                    start = int(range_header.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # A proxy from the environment must not see (or forward) the test traffic.
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")


@pytest.fixture
def server():
    s = _Server()
    s.files["blob.bin"] = PAYLOAD
    yield s
    s.close()


def _sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_download_verifies_and_renames(server, tmp_path):
    target = download.download_file(f"{server.url}/blob.bin", tmp_path / "blob.bin", sha256=_sha256(PAYLOAD),
                                    progress=False)
    assert target.read_bytes() == PAYLOAD and not (tmp_path / "blob.bin.part").exists()


def test_download_resumes_a_partial_file_with_range(server, tmp_path):
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD[:123_456])
    download.download_file(f"{server.url}/blob.bin", tmp_path / "blob.bin", md5=hashlib.md5(PAYLOAD).hexdigest(),
                           progress=False)
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD
    assert server.requests == [("blob.bin", "bytes=123456-")]


def test_download_restarts_when_the_server_ignores_range(server, tmp_path):
    server.ignore_range = True
    (tmp_path / "blob.bin.part").write_bytes(b"stale bytes from another version")
    download.download_file(f"{server.url}/blob.bin", tmp_path / "blob.bin", sha256=_sha256(PAYLOAD), progress=False)
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD


def test_complete_part_file_is_not_downloaded_again(server, tmp_path):
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD)
    download.download_file(f"{server.url}/blob.bin", tmp_path / "blob.bin", sha256=_sha256(PAYLOAD), progress=False)
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD  # the server answered 416: nothing left to send


def test_checksum_mismatch_names_the_file_and_removes_the_part(server, tmp_path):
    with pytest.raises(DataError, match=r"blob\.bin.*sha256 checksum mismatch: expected 0+, got " + _sha256(PAYLOAD)):
        download.download_file(f"{server.url}/blob.bin", tmp_path / "blob.bin", sha256="0" * 64, progress=False)
    assert not (tmp_path / "blob.bin").exists() and not (tmp_path / "blob.bin.part").exists()


def test_http_errors_and_refused_connections_are_clear(server, tmp_path):
    with pytest.raises(DataError, match=r"HTTP 404.*nothing\.bin"):
        download.download_file(f"{server.url}/nothing.bin", tmp_path / "nothing.bin", progress=False)
    closed = _Server()
    url = closed.url
    closed.close()
    with pytest.raises(DataError, match=r"cannot connect.*resume"):
        download.download_file(f"{url}/blob.bin", tmp_path / "blob.bin", progress=False, timeout=5)


def test_fetch_with_url_base_unpacks_the_archive(server, tmp_path, monkeypatch):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Bundle/Slide_01/01_1.txt", "one")
        zf.writestr("Bundle/GT_01/01_1.txt", "two")
    server.files["bundle.zip"] = archive.getvalue()
    remote = _toy("toy", RemoteFile("https://example.invalid/files/bundle.zip", "bundle.zip",
                                    sha256=_sha256(archive.getvalue()), unpack=True))
    monkeypatch.setitem(registry.DATASETS, "toy", remote)
    dest = data.fetch("toy", dest=tmp_path / "toy", base_url=server.url + "/mirror/", progress=False)
    assert (dest / "Slide_01" / "01_1.txt").read_text() == "one"  # single top folder flattened
    assert (dest / "GT_01" / "01_1.txt").read_text() == "two"
    assert not (dest / "bundle.zip").exists()
    n_requests = len(server.requests)
    data.fetch("toy", dest=tmp_path / "toy", base_url=server.url, progress=False)
    assert len(server.requests) == n_requests  # already there: nothing fetched


def test_fetch_refuses_archives_escaping_the_folder(server, tmp_path, monkeypatch):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.txt", "x")
    server.files["evil.zip"] = archive.getvalue()
    monkeypatch.setitem(registry.DATASETS, "evil",
                        _toy("evil", RemoteFile("https://example.invalid/evil.zip", "evil.zip", unpack=True)))
    with pytest.raises(DataError, match="outside"):
        data.fetch("evil", dest=tmp_path / "evil", base_url=server.url, progress=False)
    assert not (tmp_path / "evil.txt").exists()


def test_fetch_unknown_and_manual_datasets():
    with pytest.raises(ValueError, match="unknown dataset"):
        data.fetch("imagenet")
    with pytest.raises(DataError, match="monuseg.*grand-challenge"):
        data.fetch("monuseg")


def test_every_dataset_record_says_where_it_comes_from_and_how_to_get_it():
    for name, record in registry.DATASETS.items():
        assert record.source and record.licence and record.layout, name
        assert record.files or record.obtain or record.derived, name  # downloadable, or says how to get it
        for f in record.files:
            assert f.url.startswith(("https://", "http://")) and f.filename in f.url
        assert registry.DATASETS[record.folder].name == record.folder  # a derived set names a real folder


def _toy(name: str, *files) -> registry.Dataset:
    return registry.Dataset(name, name, name, source="test server", licence="none", layout="any", files=files)

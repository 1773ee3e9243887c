"""setup/download.py against a real HTTP server on 127.0.0.1 and against local mirrors.

Every failure must raise DownloadError and leave the destination folder exactly as it was (no partial file, no
temporary ``.part`` file).
"""

import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
from urllib.parse import urlsplit

import pytest

import download

CONTENT = b"The file the course needs.\n" * 1000
CONTENT_SHA256 = hashlib.sha256(CONTENT).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes``: path -> (body, declared Content-Length); unknown paths get 404."""

    timeout = 10  # seconds a stuck connection may hold the handler

    def do_GET(self):
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        body, declared_length = route
        self.send_response(200)
        self.send_header("Content-Length", str(declared_length))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A local HTTP server; ``server.url(path)`` is the URL of a route added to ``server.routes``."""
    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    httpd.routes = {
        "/data/file.txt": (CONTENT, len(CONTENT)),
        "/data/truncated.txt": (CONTENT[:100], len(CONTENT)),
    }
    httpd.url = lambda path: f"http://127.0.0.1:{httpd.server_address[1]}{path}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


@pytest.fixture
def refused_url():
    """A URL on a port that is reserved but not listening, so connecting is refused."""
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{reserved.getsockname()[1]}/data/file.txt"


def put_in_mirror(root, url, content):
    """Store ``content`` as the mirror copy of ``url``: ROOT/HOST/PATH, built here independently of download.py."""
    parts = urlsplit(url)
    path = root.joinpath(parts.netloc, *parts.path.lstrip("/").split("/"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_download_from_network_verifies_checksum(server, tmp_path, monkeypatch):
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    dest = tmp_path / "out" / "file.txt"
    assert download.download(server.url("/data/file.txt"), dest, sha256=CONTENT_SHA256, timeout=10) == dest
    assert dest.read_bytes() == CONTENT
    assert os.listdir(dest.parent) == ["file.txt"]


@pytest.mark.parametrize("route, sha256, message", [
    ("/data/missing.txt", None, "HTTP 404"),
    ("/data/truncated.txt", None, "cut short"),
    ("/data/file.txt", "0" * 64, "Checksum mismatch"),
], ids=["404", "truncated", "checksum"])
def test_failed_download_leaves_nothing_behind(server, tmp_path, monkeypatch, route, sha256, message):
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    url = server.url(route)
    out = tmp_path / "out"
    with pytest.raises(download.DownloadError, match=message) as error:
        download.download(url, out / "file.txt", sha256=sha256, timeout=10)
    assert url in str(error.value)
    assert os.listdir(out) == []


def test_network_errors_name_the_url_and_the_mirror_option(server, refused_url, tmp_path, monkeypatch):
    monkeypatch.setenv(download.MIRROR_ENV, str(tmp_path / "empty-mirror"))
    out = tmp_path / "out"
    for url in (server.url("/data/missing.txt"), refused_url):
        with pytest.raises(download.DownloadError) as error:
            download.download(url, out / "file.txt", timeout=10)
        assert url in str(error.value)
        assert download.MIRROR_ENV in str(error.value)
        assert str(download.mirror_path(tmp_path / "empty-mirror", url)) in str(error.value)
    assert os.listdir(out) == []


def test_checksum_mismatch_keeps_the_existing_file(server, tmp_path, monkeypatch):
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    dest = tmp_path / "file.txt"
    dest.write_bytes(b"an older version")
    with pytest.raises(download.DownloadError, match="Checksum mismatch"):
        download.download(server.url("/data/file.txt"), dest, sha256="0" * 64, timeout=10)
    assert dest.read_bytes() == b"an older version"
    assert os.listdir(tmp_path) == ["file.txt"]


def test_stale_file_is_replaced_by_a_verified_download(server, tmp_path, monkeypatch):
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    dest = tmp_path / "file.txt"
    dest.write_bytes(b"an older version")
    download.download(server.url("/data/file.txt"), dest, sha256=CONTENT_SHA256, timeout=10)
    assert dest.read_bytes() == CONTENT
    assert os.listdir(tmp_path) == ["file.txt"]


def test_verified_existing_file_needs_no_network(refused_url, tmp_path, monkeypatch):
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    dest = tmp_path / "file.txt"
    dest.write_bytes(CONTENT)
    assert download.download(refused_url, dest, sha256=CONTENT_SHA256, timeout=10) == dest


def test_mirror_is_used_when_the_network_is_unreachable(refused_url, tmp_path, monkeypatch):
    put_in_mirror(tmp_path / "mirror", refused_url, CONTENT)
    monkeypatch.setenv(download.MIRROR_ENV, str(tmp_path / "mirror"))
    dest = tmp_path / "out" / "file.txt"
    download.download(refused_url, dest, sha256=CONTENT_SHA256, timeout=10)
    assert dest.read_bytes() == CONTENT
    assert os.listdir(dest.parent) == ["file.txt"]


def test_mirror_roots_are_tried_in_order(refused_url, tmp_path, monkeypatch):
    first, second, third = (tmp_path / name for name in ("first", "second", "third"))
    put_in_mirror(second, refused_url, b"from the second root")
    put_in_mirror(third, refused_url, b"from the third root")
    monkeypatch.setenv(download.MIRROR_ENV, os.pathsep.join(map(str, (first, second, third))))
    assert download.mirror_roots() == [first, second, third]
    dest = download.download(refused_url, tmp_path / "out" / "file.txt", timeout=10)
    assert dest.read_bytes() == b"from the second root"


def test_corrupt_mirror_file_is_rejected(refused_url, tmp_path, monkeypatch):
    source = put_in_mirror(tmp_path / "mirror", refused_url, b"not the right bytes")
    monkeypatch.setenv(download.MIRROR_ENV, str(tmp_path / "mirror"))
    out = tmp_path / "out"
    with pytest.raises(download.DownloadError, match="Checksum mismatch") as error:
        download.download(refused_url, out / "file.txt", sha256=CONTENT_SHA256, timeout=10)
    assert str(source) in str(error.value)
    assert os.listdir(out) == []


def test_tiktoken_cache_names_are_the_published_ones():
    base = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
    assert download.tiktoken_cache_name(base + "vocab.bpe") == "6d1cbeee0f20b3d9449abfede4726ed8212e3aee"
    assert download.tiktoken_cache_name(base + "encoder.json") == "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6"


def test_seed_tiktoken_cache_writes_sha1_named_files(tmp_path, monkeypatch):
    files = {f"https://example.invalid/gpt-2/{name}": f"contents of {name}".encode()
             for name in ("vocab.bpe", "encoder.json")}
    monkeypatch.setattr(download, "TIKTOKEN_GPT2_FILES",
                        {url: hashlib.sha256(content).hexdigest() for url, content in files.items()})
    for url, content in files.items():
        put_in_mirror(tmp_path / "mirror", url, content)
    cache = download.seed_tiktoken_cache(tmp_path / "cache", mirrors=[tmp_path / "mirror"])
    assert sorted(os.listdir(cache)) == sorted(hashlib.sha1(url.encode()).hexdigest() for url in files)
    for url, content in files.items():
        assert (cache / hashlib.sha1(url.encode()).hexdigest()).read_bytes() == content


def mirror_with_tiktoken_files():
    for root in download.mirror_roots():
        if all(download.mirror_path(root, url).is_file() for url in download.TIKTOKEN_GPT2_FILES):
            return root
    return None


@pytest.mark.skipif(mirror_with_tiktoken_files() is None,
                    reason=f"no {download.MIRROR_ENV} mirror holds GPT-2's BPE files")
def test_seeded_cache_lets_tiktoken_work_offline(tmp_path):
    cache = tmp_path / "cache"
    download.main(["--seed-tiktoken-cache", str(cache)])
    code = "import tiktoken; print(tiktoken.get_encoding('gpt2').encode('Hello, do you like tea?'))"
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[15496, 11, 466, 345, 588, 8887, 30]", result.stderr
    assert sorted(os.listdir(cache)) == ["6c7ea1a7e38e3a7f062df639a5b80947f075ffe6",
                                         "6d1cbeee0f20b3d9449abfede4726ed8212e3aee"]


def test_cli_downloads_and_verifies(server, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    dest = tmp_path / "file.txt"
    download.main([server.url("/data/file.txt"), str(dest), "--sha256", CONTENT_SHA256])
    assert dest.read_bytes() == CONTENT
    assert f"saved: {dest}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        download.main([server.url("/data/file.txt"), str(tmp_path / "other.txt"), "--sha256", "0" * 64])
    assert exit_info.value.code == 1
    assert "error: Checksum mismatch" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["file.txt"]


def test_uppercase_checksum_and_readable_file(server, tmp_path, monkeypatch):
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    dest = download.download(server.url("/data/file.txt"), tmp_path / "file.txt", sha256=CONTENT_SHA256.upper())
    assert dest.read_bytes() == CONTENT
    assert dest.stat().st_mode & 0o044 == 0o044, "downloaded files must be readable by others (shared mirrors)"
    del server.routes["/data/file.txt"]  # a second call must keep the verified file, not fetch it again
    assert download.download(server.url("/data/file.txt"), dest, sha256=CONTENT_SHA256.upper()) == dest


def test_cli_needs_url_and_dest(capsys):
    with pytest.raises(SystemExit) as exit_info:
        download.main([])
    assert exit_info.value.code == 2
    assert "URL and DEST" in capsys.readouterr().err

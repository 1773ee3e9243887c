"""Download course files from their canonical URLs, or from a local mirror when offline.

Every course folder that downloads something carries an identical copy of this file (a test keeps the copies in
step), so such a folder still works after it is copied somewhere else.

A *mirror* is a folder laid out by URL: the file for ``https://HOST/PATH`` lives at ``ROOT/HOST/PATH``.
Mirror roots are read from the environment variable ``LLM_COURSE_MIRROR`` (several roots separated by
``os.pathsep``, i.e. ``:`` on Linux/macOS and ``;`` on Windows) and are consulted before the network.

Run as a script::

    python download.py URL DEST [--sha256 HEX]
    python download.py --seed-tiktoken-cache DIR
"""

import argparse
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

MIRROR_ENV = "LLM_COURSE_MIRROR"

# The two files tiktoken.get_encoding("gpt2") downloads, with their published sha256 digests.
TIKTOKEN_GPT2_FILES = {
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe":
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json":
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}


class DownloadError(RuntimeError):
    """A file could not be fetched from any mirror or from the network, or its checksum was wrong."""


def mirror_roots():
    """The mirror roots named by LLM_COURSE_MIRROR, in order (empty if the variable is unset)."""
    value = os.environ.get(MIRROR_ENV, "")
    return [Path(root) for root in value.split(os.pathsep) if root]


def mirror_path(root, url):
    """Where the file for ``url`` lives inside the mirror ``root``: ROOT/HOST/PATH."""
    parts = urlsplit(url)
    return Path(root, parts.netloc, *parts.path.lstrip("/").split("/"))


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url, dest, sha256=None, mirrors=None, timeout=60):
    """Make ``dest`` hold the file at ``url`` and return its path.

    An existing ``dest`` whose checksum matches (or any existing ``dest`` when no checksum is given) is kept.
    Otherwise each mirror root is tried first, then the network. The file is written to a temporary name
    beside ``dest`` and renamed only once it is complete and verified, so a failure never leaves a partial
    file behind.
    """
    dest = Path(dest)
    if dest.exists() and (sha256 is None or sha256_of(dest) == sha256.lower()):
        return dest
    roots = mirror_roots() if mirrors is None else [Path(m) for m in mirrors]
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            source = _copy_from_mirror(url, roots, out) or _copy_from_network(url, roots, out, timeout)
        if sha256 is not None:
            actual = sha256_of(tmp)
            if actual != sha256.lower():
                raise DownloadError(
                    f"Checksum mismatch for {url} (read from {source}): expected sha256 {sha256}, got {actual}. "
                    "The file is corrupt or not the expected version; nothing was written."
                )
        os.chmod(tmp, 0o644)  # mkstemp creates owner-only files; downloads may live in shared folders
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _copy_from_mirror(url, roots, out):
    for root in roots:
        candidate = mirror_path(root, url)
        if candidate.is_file():
            with open(candidate, "rb") as src:
                shutil.copyfileobj(src, out)
            return candidate
    return None


def _copy_from_network(url, roots, out, timeout):
    looked_in = ", ".join(str(mirror_path(root, url)) for root in roots) or f"none ({MIRROR_ENV} is not set)"
    hint = (
        f"To work offline, put the file into a mirror folder as ROOT/{urlsplit(url).netloc}{urlsplit(url).path} "
        f"and set {MIRROR_ENV}=ROOT (see setup/offline-mirror.md). Mirror paths tried: {looked_in}."
    )
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = response.headers.get("Content-Length")
            total = int(total) if total is not None else None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, desc=Path(urlsplit(url).path).name,
                      disable=None) as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as e:
        raise DownloadError(f"Could not download {url}: HTTP {e.code} {e.reason}. {hint}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"Could not download {url}: {reason}. {hint}") from e
    except http.client.HTTPException as e:
        raise DownloadError(f"Download of {url} failed part-way ({e!r}). Try again. {hint}") from e
    if total is not None and received != total:
        raise DownloadError(
            f"Download of {url} was cut short: received {received} of {total} bytes. Try again. {hint}"
        )
    return url


def tiktoken_cache_name(url):
    """tiktoken caches a downloaded file under the sha1 hex digest of its URL."""
    return hashlib.sha1(url.encode()).hexdigest()


def seed_tiktoken_cache(cache_dir, mirrors=None):
    """Fill ``cache_dir`` so that, with TIKTOKEN_CACHE_DIR=cache_dir, get_encoding("gpt2") needs no network."""
    for url, sha256 in TIKTOKEN_GPT2_FILES.items():
        download(url, Path(cache_dir) / tiktoken_cache_name(url), sha256=sha256, mirrors=mirrors)
    return Path(cache_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", nargs="?", help="canonical URL of the file")
    parser.add_argument("dest", nargs="?", help="local file to write")
    parser.add_argument("--sha256", help="expected sha256 hex digest of the file")
    parser.add_argument("--seed-tiktoken-cache", metavar="DIR",
                        help="copy GPT-2's BPE files into DIR under the names tiktoken looks for")
    args = parser.parse_args(argv)
    if not (args.seed_tiktoken_cache or (args.url and args.dest)):
        parser.error("give URL and DEST, or --seed-tiktoken-cache DIR")
    try:
        if args.seed_tiktoken_cache:
            print(f"tiktoken cache ready: {seed_tiktoken_cache(args.seed_tiktoken_cache)}")
        else:
            print(f"saved: {download(args.url, args.dest, sha256=args.sha256)}")
    except DownloadError as e:
        parser.exit(1, f"error: {e}\n")


if __name__ == "__main__":
    main()

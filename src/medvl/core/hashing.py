"""Content hashes for images and salted, one-way patient keys."""

from __future__ import annotations

import hashlib
import hmac
import os

# sha256 digests of files this process wrote and hashed while writing them (path -> (stat key, digest)):
# file_digest returns them without reading the file again while the file is unchanged
_WRITTEN: dict[str, tuple[tuple[int, int, int, int], str]] = {}


def _stat_key(path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def remember_digest(path, digest: str) -> None:
    """Record the sha256 ``digest`` of the file at ``path``, computed while writing it (call after its last
    write and rename): :func:`file_digest` then answers from it while the file's inode, size and mtime stay."""
    _WRITTEN[os.path.abspath(path)] = (_stat_key(path), digest)


def content_hash(data: bytes) -> str:
    """Hex SHA-256 of encoded image bytes; images are named by it and written once."""
    return hashlib.sha256(data).hexdigest()


def file_digest(path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file's bytes, read in chunks (``algorithm`` as hashlib names it); a sha256 recorded
    by :func:`remember_digest` for the unchanged file is returned without reading it."""
    key = os.path.abspath(path)
    if algorithm == "sha256" and (known := _WRITTEN.get(key)) is not None:
        if known[0] == _stat_key(path):
            return known[1]
        del _WRITTEN[key]
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def patient_key(raw_id: str, salt: str, namespace: str = "") -> str:
    """Salted HMAC of a patient identifier (or of a file/volume path when no patient id exists).

    The raw identifier never leaves the reader: only this 16-hex-digit key is stored."""
    msg = f"{namespace}\x00{raw_id}".encode("utf-8")
    return hmac.new(salt.encode("utf-8"), msg, hashlib.sha256).hexdigest()[:16]


def stable_int(*parts: object) -> int:
    """A deterministic 64-bit integer from any parts (independent of PYTHONHASHSEED)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big")

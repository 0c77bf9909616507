"""Content hashes for images and salted, one-way patient keys."""

from __future__ import annotations

import hashlib
import hmac


def content_hash(data: bytes) -> str:
    """Hex SHA-256 of encoded image bytes; images are named by it and written once."""
    return hashlib.sha256(data).hexdigest()


def file_digest(path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file's bytes, read in chunks (``algorithm`` as hashlib names it)."""
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

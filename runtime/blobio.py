"""Byte-level helpers for image blobs: sniffed decompression, spool-and-hash, a hashing writer
and Docker's compact JSON. Atomic file writes are in runtime/fileio.py.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
from typing import Any, BinaryIO

import zstandard

from proto.docker.errors import InvalidParameter


class _Prefixed(io.RawIOBase):
    """A stream with some already-read bytes put back in front (for sniffing compression)."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def decompressed(src: BinaryIO) -> BinaryIO:
    """src as an uncompressed stream, whatever of gzip/bzip2/xz/zstd/none it is."""
    head = b""
    while len(head) < 6:
        chunk = src.read(6 - len(head))
        if not chunk:
            break
        head += chunk
    stream: BinaryIO = io.BufferedReader(_Prefixed(head, src), 1 << 20)  # type: ignore[arg-type]
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=stream)  # type: ignore[return-value]
    if head.startswith(b"BZh"):
        return bz2.BZ2File(stream)  # type: ignore[return-value]
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(stream)  # type: ignore[return-value]
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        # OCI's tar+zstd layers (containerd, BuildKit's `compression=zstd`).
        reader = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
        return reader  # type: ignore[return-value]
    return stream


def spool(src: BinaryIO, dst: str) -> str:
    """Copy src (decompressed) to dst, returning the sha256 hex of the uncompressed bytes."""
    digest = hashlib.sha256()
    stream = decompressed(src)
    try:
        with open(dst, "wb") as out:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise
        raise InvalidParameter(f"unexpected EOF: {e}") from e
    return digest.hexdigest()


class HashingWriter(io.RawIOBase):
    """Writes through to `out`, keeping the sha256 of everything written."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.digest.update(data)
        self.out.write(data)
        return len(data)


def canonical_json(obj: Any) -> bytes:
    """Go's json.Marshal layout: no spaces, UTF-8 as is."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

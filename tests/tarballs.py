"""Tar archives built in memory for tests (PAX format, as Python and Docker write them)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Mapping

Entry = tarfile.TarInfo | tuple[tarfile.TarInfo, bytes | None]


def tar_of_entries(entries: Iterable[Entry]) -> bytes:
    """A tar of these members; a member's size is set from its data (none: no data)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info, data = entry if isinstance(entry, tuple) else (entry, None)
            if data is None:
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tar_of(files: Mapping[str, bytes | None]) -> bytes:
    """A tar of regular files (mode 0644) by name; a None value is a directory (mode 0755)."""
    entries: list[Entry] = []
    for name, data in files.items():
        info = tarfile.TarInfo(name)
        if data is None:
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
        entries.append((info, data))
    return tar_of_entries(entries)

"""File access for the config lexer: the real filesystem and an in-memory stand-in.

The lexer (`hakeeper.conf.lexer`, `hakeeper.conf.preprocess`) is pure: it reads
included files only through an injected `FileReader` (see `preprocess.FileReader`).
`OsFiles` is the adapter to the real filesystem (glob with keepalived's `GLOB_BRACE`
done by the lexer itself, so only plain globs reach `glob`), `MemoryFiles` serves
tests and `hakeeper check` on text without touching the disk.
"""

from __future__ import annotations

import errno
import fnmatch
import glob as globmod
import os
import posixpath
import socket
import stat
from collections.abc import Mapping

MAX_FILE_BYTES = 32 * 1024 * 1024
"""Config files larger than this are refused (an include glob could hit /proc/kcore)."""


class OsFiles:
    """Read config files from disk (bytes decoded as UTF-8 with surrogateescape).

    Like keepalived (`check_glob_file`), only regular, non-executable files are read;
    the file is opened non-blocking so a FIFO or device matched by a glob cannot hang
    the reader, and anything over `MAX_FILE_BYTES` is refused.
    """

    def read_text(self, path: str) -> str:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, "is a directory", path)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", path)
            if st.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
                raise OSError(errno.EPERM, "is executable (keepalived refuses it)", path)
            chunks: list[bytes] = []
            remaining = MAX_FILE_BYTES + 1
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
        finally:
            os.close(fd)
        if remaining <= 0:
            raise OSError(errno.EFBIG, f"larger than {MAX_FILE_BYTES} bytes", path)
        return b"".join(chunks).decode("utf-8", errors="surrogateescape")

    def glob(self, pattern: str) -> list[str]:
        return sorted(p for p in globmod.glob(pattern) if not os.path.isdir(p))

    def absolute(self, path: str) -> str:
        return os.path.abspath(path)


class MemoryFiles:
    """A dict of path -> text that behaves like a tiny read-only filesystem."""

    def __init__(self, files: Mapping[str, str], cwd: str = "/") -> None:
        self._cwd = cwd
        self._files = {self.absolute(p): t for p, t in files.items()}

    def absolute(self, path: str) -> str:
        return posixpath.normpath(posixpath.join(self._cwd, path))

    def read_text(self, path: str) -> str:
        try:
            return self._files[self.absolute(path)]
        except KeyError:
            raise FileNotFoundError(2, "No such file or directory", path) from None

    def glob(self, pattern: str) -> list[str]:
        absolute = self.absolute(pattern)
        hits = sorted(p for p in self._files if fnmatch.fnmatchcase(p, absolute))
        if posixpath.isabs(pattern):
            return hits
        # Report relative matches relative to cwd, like glob.glob does.
        return [posixpath.relpath(p, self._cwd) for p in hits]


def default_config_id() -> str:
    """keepalived's default config id for `@ID` lines: the short host name."""
    return socket.gethostname().split(".", 1)[0]

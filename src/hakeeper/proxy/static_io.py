"""The I/O half of static files: stat within a root, open + fstat, send without loading files.

`stat_file` is the `static.StatFn` of a live listener: `os.stat` (following symlinks,
like nginx's default `disable_symlinks off`) plus a check that the real path stays inside
the real root or alias directory, so neither a symlink nor `..` reaches outside it (then
`denied`: 403). `open_file` opens and fstat()s the chosen file and shapes the answer
with `static.file_plan` (a file gone or unreadable since `resolve`: 404 / 403 page).
`FileSender` writes the body on an asyncio/uvloop transport: a small file (up to
`SMALL`) goes with its head in one write; a larger one is sent with `os.sendfile`
straight to the socket while the transport's buffer is empty, else in `CHUNK` pieces
through the transport, stopping while the transport is paused (pause_writing /
resume_writing), so memory stays bounded whatever the file size. uvloop has no
`loop.sendfile` (NotImplementedError), hence this.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import stat as st_mode
import time

from hakeeper.proxy.static import FileInfo, FilePlan, SendFile, error_plan, file_plan

SMALL = 64 * 1024
CHUNK = 64 * 1024
KICK = 16 * 1024  # what goes through the transport when sendfile finds the socket full
SENDFILE_MAX = 1 << 20


REAL_TTL = 1.0  # seconds a directory's resolved path is reused (like open_file_cache_valid)
_real: dict[bytes, tuple[bytes, float]] = {}


def _realdir(path: bytes, now: float) -> bytes:
    """realpath() of a directory, remembered for REAL_TTL seconds (bounded cache)."""
    hit = _real.get(path)
    if hit is not None and hit[1] > now:
        return hit[0]
    if len(_real) >= 4096:
        _real.clear()
    real = os.path.realpath(path)
    _real[path] = (real, now + REAL_TTL)
    return real


def _inside(path: bytes, root: bytes, link: bool) -> bool:
    """Whether `path` resolves inside `root`: a symlink as the final component (`link`)
    resolves the whole path, else its directory is resolved through `_realdir`."""
    now = time.monotonic()
    base = _realdir(root, now)
    if link:
        real = os.path.realpath(path)
    else:
        head, _, tail = path.rstrip(b"/").rpartition(b"/")
        real = _realdir(head or b"/", now) + b"/" + tail if tail else _realdir(path, now)
        real = real.replace(b"//", b"/")
    return real == base or real.startswith(base.rstrip(b"/") + b"/")


def stat_file(path: bytes, root: bytes) -> FileInfo | None:
    """What nginx's open_file would find at `path` (None: ENOENT/ENOTDIR/too long)."""
    try:
        info = os.lstat(path)
        link = st_mode.S_ISLNK(info.st_mode)
        if link:
            info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError:
        return FileInfo(denied=True)
    except (OSError, ValueError):
        return None  # ENAMETOOLONG, ELOOP, NUL bytes: nginx answers 404 for these too
    if not _inside(path, root, link):
        return FileInfo(denied=True)
    return FileInfo(
        is_dir=st_mode.S_ISDIR(info.st_mode),
        size=info.st_size,
        mtime=int(info.st_mtime),
        regular=st_mode.S_ISREG(info.st_mode),
    )


_boundaries = itertools.count(1)  # numbers multipart/byteranges answers (per worker)


def open_file(send: SendFile, keep: bool) -> tuple[FilePlan, int]:
    """(plan, fd or -1): the file opened and its answer shaped from fstat."""
    head_only = send.view.method == b"HEAD"
    try:
        fd = os.open(send.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except PermissionError:
        return error_plan(403, keep, head_only), -1
    except (OSError, ValueError):
        return error_plan(404, keep, head_only), -1
    try:
        info = os.fstat(fd)
        # (stat_file checked just before that the path stays inside its root)
        if not st_mode.S_ISREG(info.st_mode):
            os.close(fd)
            return error_plan(404, keep, head_only), -1
        found = FileInfo(size=info.st_size, mtime=int(info.st_mtime))
        plan = file_plan(send, found, keep, boundary=next(_boundaries))
    except OSError:
        os.close(fd)
        return error_plan(500, False, head_only), -1
    if plan.length == 0:
        os.close(fd)
        return plan, -1
    return plan, fd


class FileSender:
    """Sends `plan.length` bytes of `fd` from `plan.start` after `plan.head`, then the
    pieces of `plan.more` and `plan.tail` (multipart/byteranges)."""

    __slots__ = (
        "failed",
        "fd",
        "left",
        "limits",
        "more",
        "offset",
        "paused",
        "sock",
        "tail",
        "transport",
    )

    def __init__(self, transport: asyncio.Transport, fd: int, plan: FilePlan) -> None:
        self.transport = transport
        self.fd = fd
        self.offset = plan.start
        self.left = plan.length
        self.paused = False
        self.failed = False
        self.more = list(reversed(plan.more))
        self.tail = plan.tail
        sock = transport.get_extra_info("socket")
        self.sock = sock.fileno() if sock is not None else -1
        self.limits: tuple[int, int] | None = None
        if plan.length <= SMALL and not plan.more:
            data = os.pread(fd, plan.length, plan.start)
            transport.write(plan.head + data)  # one send (writelines makes two)
            self.offset += len(data)
            self.left -= len(data)
            if self.left:
                self.fail()  # the file shrank under us: the promised length cannot be met
        else:
            transport.write(plan.head)
            if self.sock >= 0:
                # pause as soon as anything is buffered and resume only once it all went
                # out, so the socket is written by sendfile whenever it has room
                self.limits = transport.get_write_buffer_limits()
                transport.set_write_buffer_limits(high=0, low=0)

    def pump(self) -> bool:
        """Send until done (True), the transport pauses, or a failure (False; the
        connection is aborted)."""
        transport = self.transport
        if self.failed:
            return False
        while self.left > 0 or self.more:
            if not self.left:
                prefix, self.offset, self.left = self.more.pop()
                transport.write(prefix)
                continue
            if self.paused or self.fd < 0 or transport.is_closing():
                return False
            if self.sock >= 0 and not transport.get_write_buffer_size():
                want = min(self.left, SENDFILE_MAX)
                try:
                    sent = os.sendfile(self.sock, self.fd, self.offset, want)
                except (BlockingIOError, InterruptedError):
                    sent = -1
                except OSError:
                    self.fail()
                    return False
                if sent == 0:
                    self.fail()  # EOF before the promised length: truncated file
                    return False
                if sent > 0:
                    self.offset += sent
                    self.left -= sent
                    if sent == want:
                        continue
                if not self.left:
                    continue
                # the socket is full: hand a piece to the transport, which then polls
                # for writability (and pauses us until it drained)
            size = KICK if self.limits is not None else CHUNK
            try:
                data = os.pread(self.fd, min(size, self.left), self.offset)
            except OSError:
                data = b""
            if not data:
                self.fail()
                return False
            transport.write(data)
            self.offset += len(data)
            self.left -= len(data)
        if self.tail:
            transport.write(self.tail)
            self.tail = b""
        self.close()
        return True

    def fail(self) -> None:
        self.close()
        self.left = 0
        self.failed = True
        self.transport.abort()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        limits = self.limits
        if limits is not None:
            self.limits = None
            if not self.transport.is_closing():
                low, high = limits
                self.transport.set_write_buffer_limits(high=high, low=low)

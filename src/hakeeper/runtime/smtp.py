"""SMTP alerts on VRRP transitions: keepalived's `smtp_alert` (global_defs smtp_server et al.).

Follows keepalived's core/smtp.c behaviour (RFC 5321 subset, no ESMTP/TLS/AUTH): connect to
`smtp_server [port]` (default 25), then HELO `smtp_helo_name` (default "localhost"), MAIL FROM
`notification_email_from`, one RCPT TO per `notification_email` entry, DATA, headers + body,
".", QUIT. Every read and the connect are bounded by `smtp_connect_timeout` (default 30 s).
Subjects read "[router_id] VRRP Instance VI_1 - Entering MASTER state" (or "VRRP Group").

`SmtpAlerter` queues messages and sends them one at a time from a background task, so a slow
or dead relay never blocks the VRRP loop; failures are logged and counted, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
from collections import deque
from dataclasses import dataclass

log = logging.getLogger("hakeeper.smtp")

DEFAULT_PORT = 25
MAX_QUEUE = 64


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """Where and how to send alerts; built from global_defs."""

    server: str
    sender: str
    recipients: tuple[str, ...]
    port: int = DEFAULT_PORT
    helo_name: str = "localhost"
    connect_timeout: float = 30.0
    router_id: str = ""


@dataclass(frozen=True, slots=True)
class MailMessage:
    subject: str
    body: str


@dataclass(frozen=True, slots=True)
class SmtpResult:
    """Outcome of one delivery: `ok`, the stage reached and the last reply code (0 = none)."""

    ok: bool
    stage: str
    code: int = 0
    error: str = ""


_STATE_BODIES = {
    "MASTER": "=> VRRP Instance is now owning VRRP VIPs <=",
    "BACKUP": "=> VRRP Instance is nolonger owning VRRP VIPs <=",
    "FAULT": "=> VRRP Instance is nolonger owning VRRP VIPs <=",
    "STOP": "=> VRRP Instance stopped <=",
}


def vrrp_alert(router_id: str, name: str, state: str, *, group: bool = False) -> MailMessage:
    """The alert keepalived sends when instance/group `name` enters `state`."""
    kind = "Group" if group else "Instance"
    prefix = f"[{router_id}] " if router_id else ""
    subject = f"{prefix}VRRP {kind} {name} - Entering {state} state"
    body = _STATE_BODIES.get(state, f"=> VRRP {kind} is now in {state} state <=")
    if group:
        body = body.replace("VRRP Instance", "VRRP Group")
    return MailMessage(subject=subject, body=body)


def _dot_stuff(text: str) -> str:
    lines = text.replace("\r\n", "\n").split("\n")
    return "\r\n".join("." + line if line.startswith(".") else line for line in lines)


def format_message(settings: SmtpSettings, msg: MailMessage, date: str | None = None) -> bytes:
    """Headers + body of the DATA section, CRLF line ends, dot-stuffed, with the final dot."""
    when = date if date is not None else email.utils.formatdate(localtime=True)
    headers = (
        f"Date: {when}\r\n"
        f"From: {settings.sender}\r\n"
        f"Subject: {msg.subject}\r\n"
        f"X-Mailer: hakeeper\r\n"
        f"To: {', '.join(settings.recipients)}\r\n"
        "\r\n"
    )
    return (headers + _dot_stuff(msg.body) + "\r\n.\r\n").encode("utf-8", "replace")


class _SmtpError(Exception):
    def __init__(self, stage: str, code: int, error: str) -> None:
        super().__init__(error)
        self.stage = stage
        self.code = code
        self.error = error


async def _read_reply(reader: asyncio.StreamReader, timeout: float, stage: str) -> int:
    """Read one (possibly multi-line) SMTP reply and return its code."""
    while True:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout)
        except TimeoutError:
            raise _SmtpError(stage, 0, "timeout reading reply") from None
        if not line:
            raise _SmtpError(stage, 0, "connection closed by server")
        if len(line) < 3 or not line[:3].isdigit():
            raise _SmtpError(stage, 0, f"malformed reply {line[:40]!r}")
        if len(line) > 3 and line[3:4] == b"-":
            continue
        return int(line[:3])


async def _command(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    data: bytes,
    *,
    expect: int,
    stage: str,
    timeout: float,
) -> int:
    writer.write(data)
    try:
        await asyncio.wait_for(writer.drain(), timeout)
    except TimeoutError:
        raise _SmtpError(stage, 0, "timeout sending") from None
    code = await _read_reply(reader, timeout, stage)
    if code != expect:
        raise _SmtpError(stage, code, f"unexpected reply {code}")
    return code


async def send_mail(
    settings: SmtpSettings, msg: MailMessage, date: str | None = None
) -> SmtpResult:
    """Deliver one message; never raises (the result says what went wrong)."""
    timeout = settings.connect_timeout
    if not settings.recipients:
        return SmtpResult(ok=False, stage="config", error="no notification_email recipients")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(settings.server, settings.port), timeout
        )
    except TimeoutError:
        return SmtpResult(ok=False, stage="connect", error="timeout connecting")
    except OSError as exc:
        return SmtpResult(ok=False, stage="connect", error=str(exc))
    code = 0
    try:
        code = await _read_reply(reader, timeout, "greeting")
        if code != 220:
            raise _SmtpError("greeting", code, f"unexpected greeting {code}")
        helo = f"HELO {settings.helo_name}\r\n".encode()
        code = await _command(reader, writer, helo, expect=250, stage="HELO", timeout=timeout)
        mail = f"MAIL FROM:<{settings.sender}>\r\n".encode()
        code = await _command(reader, writer, mail, expect=250, stage="MAIL", timeout=timeout)
        for rcpt in settings.recipients:
            cmd = f"RCPT TO:<{rcpt}>\r\n".encode()
            code = await _command(reader, writer, cmd, expect=250, stage="RCPT", timeout=timeout)
        code = await _command(
            reader, writer, b"DATA\r\n", expect=354, stage="DATA", timeout=timeout
        )
        body = format_message(settings, msg, date)
        code = await _command(reader, writer, body, expect=250, stage="BODY", timeout=timeout)
        writer.write(b"QUIT\r\n")
        with contextlib.suppress(_SmtpError, OSError):
            await _read_reply(reader, timeout, "QUIT")
        return SmtpResult(ok=True, stage="done", code=code)
    except _SmtpError as exc:
        with contextlib.suppress(OSError):
            writer.write(b"QUIT\r\n")
        return SmtpResult(ok=False, stage=exc.stage, code=exc.code, error=exc.error)
    except OSError as exc:
        return SmtpResult(ok=False, stage="io", code=code, error=str(exc))
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


class SmtpAlerter:
    """Sends queued alerts in order from one background task; counts sent/failed/dropped."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._queue: deque[MailMessage] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="smtp-alerter")

    def alert(self, msg: MailMessage) -> None:
        if len(self._queue) >= MAX_QUEUE:
            self.dropped += 1
            log.warning("SMTP alert queue full, dropping %r", msg.subject)
            return
        self._queue.append(msg)
        self._idle.clear()
        self._wakeup.set()

    def vrrp_transition(self, name: str, state: str, *, group: bool = False) -> None:
        self.alert(vrrp_alert(self.settings.router_id, name, state, group=group))

    async def drain(self, timeout: float) -> bool:
        """Wait until the queue is empty and nothing is in flight; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            msg = self._queue.popleft()
            result = await send_mail(self.settings, msg)
            if result.ok:
                self.sent += 1
                log.info("SMTP alert sent: %s", msg.subject)
            else:
                self.failed += 1
                log.warning(
                    "SMTP alert to %s:%d failed at %s (code %d): %s",
                    self.settings.server,
                    self.settings.port,
                    result.stage,
                    result.code,
                    result.error,
                )

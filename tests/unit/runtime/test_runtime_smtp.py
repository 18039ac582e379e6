"""smtp_alert delivery against a local SMTP sink written here (asyncio server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hakeeper.runtime.smtp import (
    MailMessage,
    SmtpAlerter,
    SmtpSettings,
    format_message,
    send_mail,
    vrrp_alert,
)


@dataclass
class Sink:
    """A tiny SMTP server that records each transaction's commands and DATA."""

    reject_rcpt: bool = False
    greet: bytes = b"220 sink ESMTP\r\n"
    silent: bool = False
    commands: list[str] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    got_message: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.silent:
                await reader.read()
                return
            writer.write(self.greet)
            while line := await reader.readline():
                cmd = line.decode().rstrip("\r\n")
                self.commands.append(cmd)
                verb = cmd.split(" ", 1)[0].split(":", 1)[0].upper()
                if verb == "HELO":
                    writer.write(b"250-sink hello\r\n250 OK\r\n")
                elif verb == "MAIL":
                    writer.write(b"250 OK\r\n")
                elif verb == "RCPT":
                    writer.write(b"550 no such user\r\n" if self.reject_rcpt else b"250 OK\r\n")
                elif verb == "DATA":
                    writer.write(b"354 go ahead\r\n")
                    data = await reader.readuntil(b"\r\n.\r\n")
                    self.messages.append(data)
                    self.got_message.set()
                    writer.write(b"250 queued\r\n")
                elif verb == "QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:
                    writer.write(b"500 what\r\n")
                await writer.drain()
        finally:
            writer.close()


async def _with_sink(sink: Sink) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(sink.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port


def _settings(port: int, **kw: object) -> SmtpSettings:
    base: dict[str, object] = {
        "server": "127.0.0.1",
        "port": port,
        "sender": "lb1@example.org",
        "recipients": ("ops@example.org", "oncall@example.org"),
        "helo_name": "lb1.example.org",
        "connect_timeout": 2.0,
        "router_id": "LVS_1",
    }
    base.update(kw)
    return SmtpSettings(**base)  # type: ignore[arg-type]


def test_alert_subject_like_keepalived() -> None:
    msg = vrrp_alert("LVS_1", "VI_1", "MASTER")
    assert msg.subject == "[LVS_1] VRRP Instance VI_1 - Entering MASTER state"
    assert "owning VRRP VIPs" in msg.body
    group = vrrp_alert("LVS_1", "G1", "BACKUP", group=True)
    assert group.subject == "[LVS_1] VRRP Group G1 - Entering BACKUP state"


def test_format_dot_stuffs_and_terminates() -> None:
    settings = _settings(25)
    raw = format_message(settings, MailMessage("s", "line\n.hidden\nend"), date="D")
    assert raw.endswith(b"\r\n.\r\n")
    assert b"\r\n..hidden\r\n" in raw
    assert b"To: ops@example.org, oncall@example.org\r\n" in raw


def test_send_mail_full_dialogue() -> None:
    async def go() -> tuple[Sink, object]:
        sink = Sink()
        server, port = await _with_sink(sink)
        async with server:
            result = await send_mail(_settings(port), vrrp_alert("LVS_1", "VI_1", "MASTER"))
        return sink, result

    sink, result = asyncio.run(go())
    assert getattr(result, "ok", False), result
    assert sink.commands[:4] == [
        "HELO lb1.example.org",
        "MAIL FROM:<lb1@example.org>",
        "RCPT TO:<ops@example.org>",
        "RCPT TO:<oncall@example.org>",
    ]
    assert sink.commands[4] == "DATA"
    assert sink.commands[-1] == "QUIT"
    assert b"Subject: [LVS_1] VRRP Instance VI_1 - Entering MASTER state" in sink.messages[0]


def test_rejected_recipient_is_reported_not_raised() -> None:
    async def go() -> object:
        sink = Sink(reject_rcpt=True)
        server, port = await _with_sink(sink)
        async with server:
            return await send_mail(_settings(port), MailMessage("s", "b"))

    result = asyncio.run(go())
    assert not getattr(result, "ok", True)
    assert getattr(result, "stage", "") == "RCPT"
    assert getattr(result, "code", 0) == 550


def test_silent_server_times_out() -> None:
    async def go() -> tuple[object, float]:
        sink = Sink(silent=True)
        server, port = await _with_sink(sink)
        async with server:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            res = await send_mail(_settings(port, connect_timeout=0.3), MailMessage("s", "b"))
            return res, loop.time() - t0

    result, elapsed = asyncio.run(go())
    assert getattr(result, "stage", "") == "greeting"
    assert elapsed < 2.0


def test_connection_refused_is_counted() -> None:
    async def go() -> SmtpAlerter:
        # bind then close to get a port with nothing listening
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        alerter = SmtpAlerter(_settings(port))
        alerter.start()
        alerter.vrrp_transition("VI_1", "FAULT")
        assert await alerter.drain(5.0)
        await alerter.close()
        return alerter

    alerter = asyncio.run(go())
    assert (alerter.sent, alerter.failed) == (0, 1)


def test_alerter_sends_in_order() -> None:
    async def go() -> tuple[Sink, SmtpAlerter]:
        sink = Sink()
        server, port = await _with_sink(sink)
        async with server:
            alerter = SmtpAlerter(_settings(port))
            alerter.start()
            for state in ("BACKUP", "MASTER", "FAULT"):
                alerter.vrrp_transition("VI_1", state)
            assert await alerter.drain(5.0)
            await alerter.close()
        return sink, alerter

    sink, alerter = asyncio.run(go())
    assert alerter.sent == 3
    states = [m.split(b"Entering ")[1].split(b" ")[0] for m in sink.messages]
    assert states == [b"BACKUP", b"MASTER", b"FAULT"]

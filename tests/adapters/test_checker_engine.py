"""The checker engine on a real loop against real local backends: a stopped backend leaves the
pool within delay_loop + connect_timeout and returns when it is back; notify_up/notify_down
and quorum_up/quorum_down run as configured; status and pools follow."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from pathlib import Path

import pytest
from uvloop_support import wait_until

from hakeeper.check.engine import CheckerEngine, Pool, VsKey, pools_by_label
from hakeeper.conf.keepalived import load_keepalived
from hakeeper.conf.model import VirtualServer

NOTIFY = """#!/bin/sh
echo "$@" >> {log}
"""


def load_vs(tmp_path: Path, text: str) -> list[VirtualServer]:
    conf = tmp_path / "keepalived.conf"
    conf.write_text(text)
    cfg, diags = load_keepalived(str(conf), config_id="test")
    assert cfg is not None, diags
    return list(cfg.virtual_servers)


class Backend:
    """A TCP listener on 127.0.0.1 that can be stopped and restarted on the same port."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        async def h(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.close()

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self.server = await asyncio.start_server(h, sock=sock)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        self.server = None


def config(ports: list[int], notify: Path, **vs_opts: str) -> str:
    extra = "\n".join(f"    {k} {v}" for k, v in vs_opts.items())
    reals = "\n".join(
        f"""    real_server 127.0.0.1 {p} {{
        weight {i + 1}
        notify_up "{notify} UP 127.0.0.1:{p}"
        notify_down "{notify} DOWN 127.0.0.1:{p}"
        TCP_CHECK {{
            connect_timeout 0.3
            retry 0
            warmup 0
        }}
    }}"""
        for i, p in enumerate(ports)
    )
    return f"""virtual_server 198.18.0.100 80 {{
    delay_loop 0.2
    lvs_sched wrr
    protocol TCP
{extra}
{reals}
}}
"""


def test_stopped_backend_leaves_and_returns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hakeeper.check")
    notify_log = tmp_path / "notify.log"
    notify = tmp_path / "notify.sh"
    notify.write_text(NOTIFY.format(log=notify_log))
    notify.chmod(0o755)

    async def go() -> tuple[float, float, list[tuple[VsKey, Pool]]]:
        backends = [Backend() for _ in range(3)]
        for b in backends:
            await b.start()
        vss = load_vs(tmp_path, config([b.port for b in backends], notify))
        changes: list[tuple[VsKey, Pool]] = []
        engine = CheckerEngine(vss, on_pool_change=lambda k, p: changes.append((k, p)))
        engine.start()
        key = vss[0].key
        try:
            # every checker's first probe is BOOTSTRAP_DELAY (1 s) after start
            await wait_until(lambda: engine.probes_started >= 3, 3, "first probes")
            assert len(engine.pool(key)) == 3
            victim = backends[1]
            await victim.stop()
            t0 = time.monotonic()
            await wait_until(lambda: len(engine.pool(key)) == 2, 3, "backend removed")
            down_after = time.monotonic() - t0
            await victim.start()
            t1 = time.monotonic()
            await wait_until(lambda: len(engine.pool(key)) == 3, 3, "backend re-added")
            up_after = time.monotonic() - t1
            await wait_until(lambda: notify_log.exists() and "UP" in notify_log.read_text(), 5,
                           "notify_up ran")  # fmt: skip
            status = engine.status()[0]
            rs = next(r for r in status.real_servers if r.server.endswith(f":{victim.port}"))
            assert rs.alive and rs.weight == 2 and rs.changed_at is not None
            assert abs(rs.changed_at - time.time()) < 5
            assert rs.checkers[0].kind == "TCP_CHECK" and rs.checkers[0].last_ok
        finally:
            await engine.stop()
            for b in backends:
                if b.server is not None:
                    await b.stop()
        return down_after, up_after, changes

    down_after, up_after, changes = asyncio.run(asyncio.wait_for(go(), 30))
    # delay_loop 0.2 + connect_timeout 0.3 (a refused connect fails at once); slack for CI
    assert down_after < 0.2 + 0.3 + 0.3, down_after
    assert up_after < 0.2 + 0.3 + 0.3, up_after
    lines = notify_log.read_text().splitlines()
    victim_port = lines[0].split(":")[-1]
    assert lines[:2] == [f"DOWN 127.0.0.1:{victim_port}", f"UP 127.0.0.1:{victim_port}"]
    sizes = [len(pool) for _key, pool in changes]
    assert sizes[:3] == [3, 2, 3] and sizes[-1] == 0  # start, down, up, stop
    weights = sorted(w for _rs, w in changes[0][1])
    assert weights == [1, 2, 3]
    text = caplog.text
    assert "TCP check failed to 127.0.0.1." in text
    assert f"Removing service [127.0.0.1:{victim_port}] from VS [198.18.0.100:80]" in text
    assert f"Adding service [127.0.0.1:{victim_port}] to VS [198.18.0.100:80]" in text


def test_quorum_scripts_sorry_server_and_inhibit(tmp_path: Path) -> None:
    notify_log = tmp_path / "notify.log"
    notify = tmp_path / "notify.sh"
    notify.write_text(NOTIFY.format(log=notify_log))
    notify.chmod(0o755)

    async def go() -> tuple[list[str], list[list[tuple[str, int]]]]:
        backends = [Backend() for _ in range(2)]
        for b in backends:
            await b.start()
        text = config(
            [b.port for b in backends],
            notify,
            quorum="3",
            quorum_up=f'"{notify} QUORUM_UP"',
            quorum_down=f'"{notify} QUORUM_DOWN"',
            sorry_server="127.0.0.2 8080",
        )
        vss = load_vs(tmp_path, text)
        engine = CheckerEngine(vss)
        engine.start()
        key = vss[0].key
        seen: list[list[tuple[str, int]]] = []
        try:
            await wait_until(lambda: engine.probes_started >= 2, 3, "first probes")
            seen.append(pools_by_label(engine.pools())["|".join(key)])
            await backends[1].stop()  # weight 2 leaves: 1 < quorum 3 -> sorry server
            await wait_until(lambda: engine.status()[0].sorry_active, 3, "quorum lost")
            seen.append(pools_by_label(engine.pools())["|".join(key)])
            await backends[1].start()
            await wait_until(lambda: engine.status()[0].quorum_up, 3, "quorum regained")
            seen.append(pools_by_label(engine.pools())["|".join(key)])
            await wait_until(lambda: notify_log.exists() and "QUORUM_UP" in notify_log.read_text(),
                           5, "quorum_up ran")  # fmt: skip
        finally:
            await engine.stop()
            for b in backends:
                if b.server is not None:
                    await b.stop()
        return notify_log.read_text().split("\n"), seen

    lines, seen = asyncio.run(asyncio.wait_for(go(), 30))
    assert [len(p) for p in seen] == [2, 1, 2]
    assert seen[1] == [("127.0.0.2:8080", 1)]
    events = [ln.split()[0] for ln in lines if ln]
    assert events[:4] == ["DOWN", "QUORUM_DOWN", "UP", "QUORUM_UP"]


def test_misc_dynamic_weight_and_thousands_of_checks_do_not_block(tmp_path: Path) -> None:
    """A loop-lag probe runs while 2,000 TCP checks fire at once: the loop stays responsive."""

    async def go() -> tuple[float, int, dict[str, list[tuple[str, int]]]]:
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(4096)
        lsock.setblocking(False)
        port = lsock.getsockname()[1]
        loop = asyncio.get_running_loop()

        def accept() -> None:
            with contextlib.suppress(BlockingIOError):
                while True:
                    conn, _ = lsock.accept()
                    conn.close()

        loop.add_reader(lsock.fileno(), accept)
        reals = "\n".join(
            f"    real_server 127.0.{i // 250}.{i % 250 + 1} {port} {{\n"
            f"        TCP_CHECK {{\n connect_ip 127.0.0.1\n warmup 1\n }}\n    }}"
            for i in range(2000)
        )
        misc = f"""virtual_server 198.18.0.2 80 {{
    delay_loop 0.3
    real_server 127.0.0.1 {port} {{
        weight 1
        MISC_CHECK {{
            misc_path "/bin/sh -c 'exit 7'"
            misc_dynamic
            warmup 0
        }}
    }}
}}
"""
        vss = load_vs(
            tmp_path, f"virtual_server 198.18.0.1 80 {{\n delay_loop 5\n{reals}\n}}\n" + misc
        )
        engine = CheckerEngine(vss)
        engine.start()
        worst = 0.0
        try:
            t_end = time.monotonic() + 2.5
            while time.monotonic() < t_end:
                t = loop.time()
                await asyncio.sleep(0.01)
                worst = max(worst, loop.time() - t - 0.01)
            await wait_until(lambda: engine.probes_started >= 2001, 5, "all probes")
            await wait_until(
                lambda: pools_by_label(engine.pools()).get("addr|198.18.0.2|80|TCP")
                == [(f"127.0.0.1:{port}", 5)], 5, "misc weight 7-2")  # fmt: skip
            alive = sum(r.alive for r in engine.status()[0].real_servers)
            return worst, alive, pools_by_label(engine.pools())
        finally:
            await engine.stop()
            loop.remove_reader(lsock.fileno())
            lsock.close()

    worst, alive, _pools = asyncio.run(asyncio.wait_for(go(), 30))
    assert alive == 2000
    assert worst < 0.25, f"loop stalled {worst:.3f}s"


def test_reload_keeps_live_state_and_applies_changes(tmp_path: Path) -> None:
    """update(): a kept server keeps its health, a new one joins, a removed one leaves,
    a changed weight is applied, and a removed virtual server's pool empties."""
    notify = tmp_path / "notify.sh"
    notify.write_text(NOTIFY.format(log=tmp_path / "n.log"))
    notify.chmod(0o755)

    async def go() -> list[tuple[VsKey, Pool]]:
        backends = [Backend() for _ in range(3)]
        for b in backends:
            await b.start()
        ports = [b.port for b in backends]
        first = load_vs(tmp_path, config(ports[:2], notify))
        changes: list[tuple[VsKey, Pool]] = []
        engine = CheckerEngine(first, on_pool_change=lambda k, p: changes.append((k, p)))
        engine.start()
        key = first[0].key
        label = "|".join(key)
        try:
            await wait_until(lambda: engine.probes_started >= 2, 3, "first probes")
            await backends[0].stop()
            await wait_until(lambda: len(engine.pool(key)) == 1, 3, "first backend down")
            # reload: server 0 kept (still down), server 1 dropped, server 2 added;
            # weights follow their position in the new file (2 -> weight 1, 0 -> weight 2)
            second = load_vs(tmp_path, config([ports[2], ports[0]], notify))
            engine.update(second)
            pools = pools_by_label(engine.pools())[label]
            assert pools == [(f"127.0.0.1:{ports[2]}", 1)]  # 0 stays down across the reload
            await backends[0].start()
            await wait_until(lambda: len(engine.pool(key)) == 2, 3, "kept server back")
            weights = dict(pools_by_label(engine.pools())[label])
            assert weights == {f"127.0.0.1:{ports[2]}": 1, f"127.0.0.1:{ports[0]}": 2}
            engine.update([])  # the virtual server is gone
            assert engine.pools() == {}
        finally:
            await engine.stop()
            for b in backends:
                if b.server is not None:
                    await b.stop()
        return changes

    changes = asyncio.run(asyncio.wait_for(go(), 30))
    assert changes[-1][1] == []

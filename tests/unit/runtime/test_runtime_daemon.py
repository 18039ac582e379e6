"""Whole daemons in one loop over a fake wire (no root): election, SIGTERM, reload, sync, notify.

Real config files are loaded with the real keepalived.conf reader; sockets are fakes
(`fakewire`), netlink is off (VIP state is read from the drivers). Every wait is a
condition with a deadline.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from fakewire import FakeWire

from hakeeper.io.vrrp_socket import VrrpSocketConfig
from hakeeper.runtime.daemon import Daemon, DaemonOptions
from hakeeper.runtime.process import loop_factory
from hakeeper.vrrp.packet import decode

A_IP, B_IP = "198.18.0.1", "198.18.0.2"


def conf(*instances: str, extra: str = "") -> str:
    return "global_defs {\n    router_id t\n}\n" + extra + "".join(instances)


def inst(name: str = "VI_1", *, prio: int, vrid: int = 51, body: str = "") -> str:
    return f"""
vrrp_instance {name} {{
    interface eth0
    virtual_router_id {vrid}
    priority {prio}
    advert_int 0.05
    version 3
    {body}
    virtual_ipaddress {{
        198.18.0.{vrid + 49}/24
    }}
}}
"""


class Harness:
    """Runs daemons as tasks in the current loop; records the scripts they would run."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.wire = FakeWire()
        self.ran: list[tuple[str, ...]] = []
        self.script_ok: dict[str, bool] = {}
        self.tasks: dict[str, asyncio.Task[int]] = {}
        self.daemons: dict[str, Daemon] = {}

    async def exec_fn(self, argv: Sequence[str], timeout: float) -> int | None:
        self.ran.append(tuple(argv))
        return 0 if self.script_ok.get(argv[0], True) else 1

    def start(self, name: str, ip: str, text: str, factory: Any = None) -> Daemon:
        path = self.tmp / f"{name}.conf"
        path.write_text(text)
        options = DaemonOptions(
            config_file=str(path), control_path=None, use_netlink=False,
            status_file=str(self.tmp / f"{name}.json"),
        )  # fmt: skip
        daemon = Daemon(
            options, socket_factory=factory or self.wire.factory(ip), exec_fn=self.exec_fn
        )
        self.daemons[name] = daemon
        self.tasks[name] = asyncio.get_running_loop().create_task(daemon.run())
        return daemon

    def rewrite(self, name: str, text: str) -> None:
        (self.tmp / f"{name}.conf").write_text(text)

    async def stop_all(self) -> None:
        for name, daemon in self.daemons.items():
            if not self.tasks[name].done():
                daemon.request("term")
        for task in self.tasks.values():
            await asyncio.wait_for(task, 5.0)


def state(d: Daemon, name: str = "VI_1") -> str:
    run = d.instances.get(name)
    if run is None or run.driver is None:
        return "NONE"
    return run.driver.state.value


async def until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def run_scenario(tmp_path: Path, body: Callable[[Harness], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        h = Harness(tmp_path)
        try:
            return await body(h)
        finally:
            await h.stop_all()

    # the production loop (hakeeper run uses uvloop), so its quirks show up here too
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(go())


def test_election_and_sigterm_priority_zero(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        a = h.start("a", A_IP, conf(inst(prio=150)))
        b = h.start("b", B_IP, conf(inst(prio=100)))
        await until(lambda: state(a) == "MASTER" and state(b) == "BACKUP", what="election")
        assert a.instances["VI_1"].driver.vips_installed  # type: ignore[union-attr]
        a.request("term")
        assert await asyncio.wait_for(h.tasks["a"], 3.0) == 0
        last_payload = next(p for s, p in reversed(h.wire.sent) if s == A_IP)
        last = decode(
            last_payload,
            src=ipaddress.ip_address(A_IP),
            dst=ipaddress.ip_address("224.0.0.18"),
        )
        assert getattr(last, "priority", None) == 0
        await until(lambda: state(b) == "MASTER", what="b takes over")
        stop = [r for r in h.ran if r[-2:] == ("STOP", "150")]
        assert not stop  # no notify configured: nothing ran

    run_scenario(tmp_path, body)


def test_notify_arguments_and_order(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        notify = 'notify_master /bin/m.sh\n    notify "/bin/n.sh x"'
        a = h.start("a", A_IP, conf(inst(prio=150, body=notify)))
        await until(lambda: state(a) == "MASTER")
        await until(lambda: ("/bin/n.sh", "x", "INSTANCE", "VI_1", "MASTER", "150") in h.ran)
        i_master = h.ran.index(("/bin/m.sh",))
        i_notify = h.ran.index(("/bin/n.sh", "x", "INSTANCE", "VI_1", "MASTER", "150"))
        assert h.ran[0] == ("/bin/n.sh", "x", "INSTANCE", "VI_1", "BACKUP", "150")
        assert i_master < i_notify
        a.request("term")
        await asyncio.wait_for(h.tasks["a"], 3.0)
        assert h.ran[-1] == ("/bin/n.sh", "x", "INSTANCE", "VI_1", "STOP", "150")

    run_scenario(tmp_path, body)


def test_reload_unchanged_keeps_state_changed_restarts_bad_is_rejected(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        vi1, vi2 = inst(prio=150), inst("VI_2", prio=150, vrid=52)
        a = h.start("a", A_IP, conf(vi1, vi2))
        await until(lambda: state(a) == "MASTER" and state(a, "VI_2") == "MASTER")
        d1 = a.instances["VI_1"].driver
        d2 = a.instances["VI_2"].driver
        transitions = d1.counters.transitions  # type: ignore[union-attr]
        h.rewrite("a", conf(vi1, "vrrp_instance BROKEN {\n  priority 999\n"))
        a.request("hup")
        await until(lambda: a.reloads.failed == 1, what="failed reload")
        assert set(a.instances) == {"VI_1", "VI_2"}
        vi3 = inst("VI_3", prio=120, vrid=53)
        h.rewrite("a", conf(vi1, inst("VI_2", prio=140, vrid=52), vi3))
        a.request("hup")
        await until(lambda: a.reloads.ok == 1, what="good reload")
        assert a.reloads.last_summary == {
            "removed": [], "added": ["VI_3"], "changed": ["VI_2"], "unchanged": ["VI_1"],
        }  # fmt: skip
        assert a.instances["VI_1"].driver is d1
        assert d1.counters.transitions == transitions  # type: ignore[union-attr]
        assert a.instances["VI_2"].driver is not d2 and not d2.running  # type: ignore[union-attr]
        await until(lambda: state(a, "VI_3") == "MASTER", what="VI_3 up")
        h.rewrite("a", conf(vi1))
        a.request("hup")
        await until(lambda: a.reloads.ok == 2)
        assert a.reloads.last_summary["removed"] == ["VI_2", "VI_3"]
        assert set(a.instances) == {"VI_1"} and state(a) == "MASTER"

    run_scenario(tmp_path, body)


def test_track_script_weight_and_fault(tmp_path: Path) -> None:
    scripts = """
vrrp_script chk_w {
    script "/bin/chk_w"
    interval 0.05
    weight -60
}
vrrp_script chk_f {
    script "/bin/chk_f"
    interval 0.05
}
"""
    track = "track_script {\n        chk_w\n        chk_f\n    }"

    async def body(h: Harness) -> None:
        a = h.start("a", A_IP, conf(inst(prio=150, body=track), extra=scripts))
        b = h.start("b", B_IP, conf(inst(prio=100)))
        await until(lambda: state(a) == "MASTER" and state(b) == "BACKUP")
        h.script_ok["/bin/chk_w"] = False
        await until(lambda: state(b) == "MASTER" and state(a) == "BACKUP", what="weight")
        assert a.instances["VI_1"].driver.machine.priority == 90  # type: ignore[union-attr]
        h.script_ok["/bin/chk_f"] = False
        await until(lambda: state(a) == "FAULT", what="weight 0 -> FAULT")
        h.script_ok["/bin/chk_w"] = h.script_ok["/bin/chk_f"] = True
        await until(lambda: state(a) == "MASTER" and state(b) == "BACKUP", what="recovery")
        st = a.status()
        assert {s["name"]: s["state"] for s in st["scripts"]} == {"chk_f": "GOOD", "chk_w": "GOOD"}

    run_scenario(tmp_path, body)


def test_sync_group_all_or_nothing(tmp_path: Path) -> None:
    group = "vrrp_sync_group G {\n    group {\n        VI_1\n        VI_2\n    }\n}\n"
    chk = 'vrrp_script chk {\n    script "/bin/chk"\n    interval 0.05\n}\n'
    track = "track_script {\n        chk\n    }"

    async def body(h: Harness) -> None:
        a = h.start(
            "a", A_IP, conf(inst(prio=150), inst("VI_2", prio=150, vrid=52, body=track),
                            extra=chk + group),
        )  # fmt: skip
        b = h.start("b", B_IP, conf(inst(prio=100), inst("VI_2", prio=100, vrid=52), extra=group))
        await until(
            lambda: (
                {state(a), state(a, "VI_2"), state(b), state(b, "VI_2")} >= {"MASTER"}
                and state(a) == state(a, "VI_2") == "MASTER"
                and state(b) == state(b, "VI_2") == "BACKUP"
            ),
            what="group masters on a",
        )
        h.script_ok["/bin/chk"] = False
        await until(
            lambda: (
                state(a) == state(a, "VI_2") == "FAULT" and state(b) == state(b, "VI_2") == "MASTER"
            ),
            what="whole group moves",
        )
        assert a.status()["sync_groups"][0]["state"] == "FAULT"
        h.script_ok["/bin/chk"] = True
        await until(lambda: state(a) == state(a, "VI_2") == "MASTER", what="group back")

    run_scenario(tmp_path, body)


def test_bad_config_at_start_exits_1(tmp_path: Path) -> None:
    async def body(h: Harness) -> int:
        h.start("a", A_IP, conf("vrrp_instance X {\n  priority 999\n}\n"))
        return await asyncio.wait_for(h.tasks["a"], 3.0)

    assert run_scenario(tmp_path, body) == 1


def test_usr1_writes_status_file(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        a = h.start("a", A_IP, conf(inst(prio=150)))
        await until(lambda: state(a) == "MASTER")
        a.request("usr1")
        path = tmp_path / "a.json"
        await until(path.exists, what="status file")
        assert '"MASTER"' in path.read_text()

    run_scenario(tmp_path, body)


@pytest.mark.parametrize("prio", [255])
def test_owner_is_master_at_once(tmp_path: Path, prio: int) -> None:
    async def body(h: Harness) -> None:
        a = h.start("a", A_IP, conf(inst(prio=prio)))
        await until(lambda: state(a) == "MASTER", timeout=5.0, what="owner MASTER at start")

    run_scenario(tmp_path, body)


def test_smtp_alert_on_transition(tmp_path: Path) -> None:
    received: list[bytes] = []

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"DATA":
                writer.write(b"354 go\r\n")
                received.append(await reader.readuntil(b"\r\n.\r\n"))
                writer.write(b"250 ok\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
        writer.close()

    async def body(h: Harness) -> None:
        server = await asyncio.start_server(sink, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        gdefs = (
            "global_defs {\n    router_id LB1\n    notification_email {\n        ops@example.org\n"
            f"    }}\n    notification_email_from lb1@example.org\n"
            f"    smtp_server 127.0.0.1 {port}\n    smtp_connect_timeout 2\n}}\n"
        )
        async with server:
            a = h.start("a", A_IP, gdefs + inst(prio=150, body="smtp_alert"))
            await until(lambda: state(a) == "MASTER")
            await until(lambda: any(b"Entering MASTER" in m for m in received), what="mail")
        subjects = [m.split(b"Subject: ")[1].split(b"\r\n")[0] for m in received]
        assert b"[LB1] VRRP Instance VI_1 - Entering MASTER state" in subjects

    run_scenario(tmp_path, body)


def test_track_file_weight(tmp_path: Path) -> None:
    value = tmp_path / "value"
    tfile = f"""
vrrp_track_file tf {{
    file {value}
    weight -10
    init_file 0
}}
"""
    track = "track_file {\n        tf\n    }"

    async def body(h: Harness) -> None:
        a = h.start("a", A_IP, conf(inst(prio=150, body=track), extra=tfile))
        b = h.start("b", B_IP, conf(inst(prio=100)))
        await until(lambda: state(a) == "MASTER" and state(b) == "BACKUP")
        assert value.read_text().strip() == "0"
        value.write_text("6\n")  # 6 x -10 = -60: 150 -> 90
        await until(lambda: state(b) == "MASTER", what="file-driven failover")
        assert a.instances["VI_1"].driver.machine.priority == 90  # type: ignore[union-attr]
        value.write_text("30\n")  # 30 x -10 = -300, at or below -254: FAULT
        await until(lambda: state(a) == "FAULT", what="file FAULT")
        value.write_text("0\n")
        await until(lambda: state(a) == "MASTER", what="recovered")

    run_scenario(tmp_path, body)


def test_instance_that_failed_to_start_is_retried_on_reload(tmp_path: Path) -> None:
    missing = {"eth9"}

    async def body(h: Harness) -> None:
        make = h.wire.factory(A_IP)

        def factory(config: VrrpSocketConfig) -> Any:
            if config.ifname in missing:
                raise OSError(19, "No such device")
            return make(config)

        text = conf(inst(prio=150).replace("eth0", "eth9"), inst("VI_2", prio=150, vrid=52))
        a = h.start("a", A_IP, text, factory=factory)
        await until(lambda: state(a, "VI_2") == "MASTER")
        assert a.status()["instances"][0]["state"] == "NOT_RUNNING"
        assert "No such device" in a.status()["instances"][0]["error"]
        missing.clear()  # the interface appears; the same file is reloaded
        a.request("hup")
        await until(lambda: a.reloads.ok == 1)
        assert a.reloads.last_summary["changed"] == ["VI_1"]
        assert a.reloads.last_summary["unchanged"] == ["VI_2"]
        await until(lambda: state(a) == "MASTER", what="VI_1 started on reload")

    run_scenario(tmp_path, body)


def test_changed_master_is_replaced_without_failover(tmp_path: Path) -> None:
    notify = 'notify "/bin/n.sh"'

    async def body(h: Harness) -> None:
        a = h.start("a", A_IP, conf(inst(prio=150, body=notify)))
        b = h.start("b", B_IP, conf(inst(prio=100)))
        await until(lambda: state(a) == "MASTER" and state(b) == "BACKUP")
        # the notify of the first MASTER transition runs asynchronously: let it land first
        await until(lambda: any("MASTER" in r for r in h.ran), what="the initial notify")
        b_transitions = b.instances["VI_1"].driver.counters.transitions  # type: ignore[union-attr]
        old = a.instances["VI_1"].driver
        ran_before = len(h.ran)
        sent_before = len(h.wire.sent)
        h.rewrite("a", conf(inst(prio=160, body=notify)))
        a.request("hup")
        await until(lambda: a.reloads.ok == 1)
        new = a.instances["VI_1"].driver
        assert new is not old and new is not None
        assert state(a) == "MASTER", "the successor resumes MASTER at once"
        await until(lambda: len(h.wire.sent) > sent_before + 5, what="adverts after reload")
        from_a = [p for s, p in h.wire.sent[sent_before:] if s == A_IP]
        src, dst = ipaddress.ip_address(A_IP), ipaddress.ip_address("224.0.0.18")
        prios = {getattr(decode(p, src=src, dst=dst), "priority", None) for p in from_a}
        assert prios == {160}, "no priority-0 resignation, new priority advertised"
        assert b.instances["VI_1"].driver.counters.transitions == b_transitions  # type: ignore[union-attr]
        assert h.ran[ran_before:] == [], "no notify: the role did not change"

    run_scenario(tmp_path, body)


def test_notify_fifo_lines_in_order(tmp_path: Path) -> None:
    fifo = tmp_path / "ka.fifo"

    async def body(h: Harness) -> None:
        gdefs = f"global_defs {{\n    notify_fifo {fifo}\n}}\n"
        group = "vrrp_sync_group G {\n    group {\n        VI_1\n        VI_2\n    }\n}\n"
        a = h.start("a", A_IP, gdefs + group + inst(prio=150) + inst("VI_2", prio=150, vrid=52))
        await until(lambda: state(a) == state(a, "VI_2") == "MASTER")
        await until(lambda: a.status()["sync_groups"][0]["state"] == "MASTER")
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            lines = os.read(fd, 65536).decode().splitlines()
        finally:
            os.close(fd)
        vi1 = [ln for ln in lines if '"VI_1"' in ln]
        assert vi1 == ['INSTANCE "VI_1" BACKUP 150', 'INSTANCE "VI_1" MASTER 150']
        assert 'INSTANCE "VI_2" MASTER 150' in lines
        assert lines[-1] == 'GROUP "G" MASTER'

    run_scenario(tmp_path, body)

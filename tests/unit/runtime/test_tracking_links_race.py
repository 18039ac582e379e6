"""Tracker.start_links: a link that comes up while the daemon reads the interfaces is seen.

Regression for a lab flake ("timed out waiting for switch back to lb1"): the daemon of a node
whose cable was just plugged in read eth0 as down, the carrier-up notification arrived before
the link socket was subscribed, and the instance stayed in FAULT. Here a fake netlink pair
makes that ordering deterministic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from hakeeper.io import linkwatch
from hakeeper.runtime.tracking import Tracker


@dataclass(frozen=True)
class Event:
    ifname: str
    usable: bool


class FakeWatcher:
    """Gets the kernel's notifications only from the moment it exists (as a bound socket)."""

    live: ClassVar[list[FakeWatcher]] = []

    def __init__(self) -> None:
        self.queued: list[Event] = []
        FakeWatcher.live.append(self)

    def attach(self, loop: asyncio.AbstractEventLoop, on_event: Callable[[Event], None]) -> None:
        for event in self.queued:  # a readable socket is drained right after add_reader
            loop.call_soon(on_event, event)
        self.queued = []

    def close(self) -> None:
        FakeWatcher.live.remove(self)


def notify(event: Event) -> None:
    for watcher in FakeWatcher.live:
        watcher.queued.append(event)


@dataclass(frozen=True)
class Info:
    name: str
    up: bool
    running: bool


class CablePluggedDuringRead:
    """The dump says eth0 has no carrier; carrier comes up right after the dump was taken."""

    async def interfaces(self) -> list[Info]:
        await asyncio.sleep(0)
        dump = [Info("eth0", up=True, running=False)]
        notify(Event("eth0", usable=True))
        return dump


def test_link_up_between_the_read_and_the_subscription_is_not_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(linkwatch, "LinkWatcher", FakeWatcher)
    FakeWatcher.live = []
    changes: list[bool] = []

    async def go() -> dict[str, bool]:
        loop = asyncio.get_running_loop()
        tracker: Any = None

        def on_change() -> None:
            changes.append(tracker.links["eth0"])

        async def no_exec(*_args: Any, **_kw: Any) -> int:
            return 0

        tracker = Tracker(loop, no_exec, on_change, CablePluggedDuringRead())
        await tracker.start_links()
        for _ in range(3):
            await asyncio.sleep(0)
        links = dict(tracker.links)
        await tracker.close()
        return links

    assert asyncio.run(go()) == {"eth0": True}
    assert changes == [True]  # the instances were told (FAULT -> BACKUP)

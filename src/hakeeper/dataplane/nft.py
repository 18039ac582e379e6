"""The nftables data plane: applies reconcile plans to our own tables through libnftables JSON.

I/O side of `nft_rules` (the pure renderer). Talks to the kernel through libnftables'
JSON API: `ctypes` to `libnftables.so.1` when present (~1 ms per batch), else
`nft -j -f -` as a subprocess; in another network namespace (tests, lab) through
`ip netns exec NS nft -j -f -`. Every batch is one netlink transaction (all or nothing).
We own `table inet hakeeper` (and `table netdev hakeeper` once a DR service exists): both
are deleted at start (leftovers of a killed daemon) and at stop, nothing else is touched.

DR needs each backend's MAC: resolved with `ip neigh` (a ping first when the entry is
missing); a backend whose MAC cannot be resolved yet is left out and retried at a later
apply (at most every 5 s). A failed batch is logged and counted, the previous state stays
in the kernel, and the next apply rebuilds every service from scratch.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import shutil
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from hakeeper.conf.model import IPAddress
from hakeeper.dataplane.desired import DesiredState, Service, ServiceKey
from hakeeper.dataplane.nft_rules import TABLE, L2Peer, Renderer, approximations, supported
from hakeeper.dataplane.reconcile import Plan, plan

log = logging.getLogger("hakeeper.dataplane.nft")

NFT_CTX_OUTPUT_JSON = 1 << 4
L2_RETRY_S = 5.0  # how often an unresolved DR backend's MAC is looked up again
Json = dict[str, Any]


class NftError(RuntimeError):
    """nft refused a batch (message carries its error output)."""


class _Lib:
    """A minimal ctypes binding of libnftables' buffer API."""

    def __init__(self, path: str = "libnftables.so.1") -> None:
        lib = ctypes.CDLL(path)
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        self.lib = lib

    def run(self, text: str) -> tuple[int, str, str]:
        lib = self.lib
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise NftError("nft_ctx_new failed")
        try:
            lib.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON)
            lib.nft_ctx_buffer_output(ctx)
            lib.nft_ctx_buffer_error(ctx)
            rc = lib.nft_run_cmd_from_buffer(ctx, text.encode())
            out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
            err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
            return rc, out, err
        finally:
            lib.nft_ctx_free(ctx)


class Nft:
    """Runs JSON batches: the library in our namespace, else the `nft` binary (or in `netns`)."""

    def __init__(self, netns: str | None = None, *, use_library: bool = True) -> None:
        self.netns = netns
        self._lib: _Lib | None = None
        if use_library and netns is None:
            with contextlib.suppress(OSError, AttributeError):
                self._lib = _Lib()
        self.batches = 0
        self.errors = 0
        self.last_ms = 0.0

    @property
    def via(self) -> str:
        return "libnftables" if self._lib is not None else "nft -j"

    def _argv(self, *args: str) -> list[str]:
        base = ["nft", *args]
        return ["ip", "netns", "exec", self.netns, *base] if self.netns else base

    def run_text(self, text: str) -> str:
        t0 = time.perf_counter()
        if self._lib is not None:
            rc, out, err = self._lib.run(text)
        else:
            proc = subprocess.run(
                self._argv("-j", "-f", "-"),
                input=text,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        self.last_ms = (time.perf_counter() - t0) * 1000
        if rc != 0:
            self.errors += 1
            raise NftError(err.strip() or f"nft failed with rc={rc}")
        self.batches += 1
        return out

    def run(self, cmds: Sequence[Json]) -> None:
        if cmds:
            self.run_text(
                json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}}, *cmds]})
            )

    def list_table(self, family: str) -> Json | None:
        """Our table as JSON, or None when it does not exist."""
        try:
            out = self.run_text(
                json.dumps({"nftables": [{"list": {"table": {"family": family, "name": TABLE}}}]})
            )
        except NftError:
            return None
        return json.loads(out) if out.strip() else None

    def delete_table(self, family: str) -> None:
        with contextlib.suppress(NftError):
            self.run([{"delete": {"table": {"family": family, "name": TABLE}}}])

    def works(self) -> bool:
        """Can we create (and remove) a table? False without root / nf_tables."""
        if self._lib is None and shutil.which("nft") is None:
            return False
        probe = "hakeeper_probe"
        try:
            self.run(
                [
                    {"add": {"table": {"family": "inet", "name": probe}}},
                    {"delete": {"table": {"family": "inet", "name": probe}}},
                ]
            )
        except (NftError, OSError, subprocess.SubprocessError):
            return False
        return True


# --------------------------------------------------------------------------- L2 (DR)


def _ip_json(netns: str | None, *args: str) -> Any:
    argv = ["ip", *(["-n", netns] if netns else []), "-j", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    return json.loads(proc.stdout)


def resolve_l2(addr: IPAddress, netns: str | None = None, *, timeout: float = 1.0) -> L2Peer | None:
    """Egress device, neighbour MAC and own MAC for a DR backend, or None if unresolved."""
    routes = _ip_json(netns, "route", "get", str(addr))
    if not routes or "dev" not in routes[0] or "gateway" in routes[0]:
        return None  # DR backends must be on a directly connected segment
    dev = routes[0]["dev"]
    links = _ip_json(netns, "link", "show", "dev", dev)
    if not links or "address" not in links[0]:
        return None
    own = links[0]["address"]
    deadline = time.monotonic() + timeout
    pinged = False
    while True:
        for n in _ip_json(netns, "neigh", "show", str(addr), "dev", dev):
            if n.get("lladdr") and "FAILED" not in n.get("state", []):
                return L2Peer(dev=dev, mac=n["lladdr"], own_mac=own)
        if time.monotonic() >= deadline:
            return None
        if not pinged:
            pinged = True
            ping = ["ping", "-c", "1", "-W", "1", "-q", str(addr)]
            argv = ["ip", "netns", "exec", netns, *ping] if netns else ping
            subprocess.run(argv, capture_output=True, timeout=3, check=False)
        else:
            time.sleep(0.05)


# ------------------------------------------------------------------------- data plane


class NftDataplane:
    """LVS services in the kernel through nftables (NAT and DR)."""

    name = "nftables"

    def __init__(
        self, nft: Nft | None = None, *, masquerade: bool = False, inline: bool = False
    ) -> None:
        self.nft = nft if nft is not None else Nft()
        self.masquerade = masquerade
        self.inline = inline  # run batches on the loop's thread (it may sit in a namespace)
        self.actual = DesiredState()
        self.unsupported: dict[ServiceKey, str] = {}
        self.notes: dict[ServiceKey, tuple[str, ...]] = {}
        self.l2: dict[IPAddress, L2Peer] = {}
        self._l2_failed: dict[IPAddress, float] = {}
        self._rendered: dict[ServiceKey, set[str]] = {}
        self._devices: set[str] = set()
        self._netdev = False
        self.last_plan: dict[str, int] = {}
        self.applies = 0
        self.failures = 0
        self.last_error: str | None = None

    def supports(self, service: Service) -> str | None:
        return supported(service)

    async def _call(self, fn: Any, *args: Any) -> Any:
        return fn(*args) if self.inline else await asyncio.to_thread(fn, *args)

    async def start(self) -> None:
        await self._call(self._start)

    def _start(self) -> None:
        self.nft.delete_table("inet")
        self.nft.delete_table("netdev")
        self.nft.run(Renderer().base_inet())
        self.actual = DesiredState()
        self._rendered.clear()
        self._devices.clear()
        self._netdev = False

    async def stop(self) -> None:
        await self._call(self._stop)

    def _stop(self) -> None:
        self.nft.delete_table("inet")
        self.nft.delete_table("netdev")
        self.actual = DesiredState()
        self._rendered.clear()

    async def apply(self, desired: DesiredState) -> Plan:
        """Reconcile the kernel with `desired`; returns the plan that was applied."""
        result: Plan = await self._call(self._apply, desired)
        return result

    def _resolve(self, services: Sequence[Service]) -> None:
        for s in services:
            if s.method != "DR":
                continue
            for b in s.backends:
                if b.address in self.l2:
                    continue
                failed = self._l2_failed.get(b.address)
                if failed is not None and time.monotonic() - failed < L2_RETRY_S:
                    continue  # an unreachable backend must not slow every apply down
                peer = resolve_l2(b.address, self.nft.netns)
                if peer is not None:
                    self.l2[b.address] = peer
                    self._l2_failed.pop(b.address, None)
                else:
                    self._l2_failed[b.address] = time.monotonic()
                    log.warning("DR backend %s: no MAC address yet; left out", b.address)

    def _apply(self, desired: DesiredState) -> Plan:
        keep: list[Service] = []
        self.unsupported = {}
        for s in desired.services:
            why = supported(s)
            if why is None:
                keep.append(s)
            else:
                self.unsupported[s.key] = why
        wanted = DesiredState(tuple(keep))
        self.notes = {s.key: approximations(s) + s.notes for s in keep}
        self._resolve(keep)
        the_plan = plan(wanted, self.actual)
        r = Renderer(self.l2)
        touched = set(the_plan.touched)
        for s in keep:  # a DR backend whose MAC just got resolved changes the rendering
            if (
                s.method == "DR"
                and s.key not in touched
                and self._usable(s) != self._rendered.get(s.key, set())
            ):
                touched.add(s.key)
        devices = {
            self.l2[b.address].dev
            for s in keep
            if s.method == "DR"
            for b in s.backends
            if b.address in self.l2
        }
        need_netdev = any(s.method == "DR" for s in keep)
        if need_netdev and not self._netdev:
            r.cmds += r.base_netdev(sorted(devices))
        else:
            for dev in sorted(devices - self._devices):
                r.cmds += r.ingress_chain(dev)
        rendered = dict(self._rendered)
        for key in [*self.actual.keys, *wanted.keys]:
            if key not in touched:
                continue
            touched.discard(key)
            old, new = self.actual.get(key), wanted.get(key)
            if old is not None and (new is None or old.settings != new.settings):
                r.delete_service(old, rendered.pop(key, set()))
                old = None
            if new is None:
                continue
            if old is None:
                r.add_service(new)
            else:
                r.update_backends(new, old, rendered.get(key, set()))
            rendered[key] = self._usable(new)
        if self.masquerade and the_plan:
            r.masquerade(keep)
        try:
            self.nft.run(r.cmds)
        except NftError as exc:
            self.failures += 1
            self.last_error = str(exc)
            log.error("nftables batch failed (%d commands): %s", len(r.cmds), exc)
            with contextlib.suppress(NftError):  # rebuild everything next time
                self._start()
            raise
        self.applies += 1
        self.actual = wanted
        self._rendered = rendered
        self._devices |= devices
        self._netdev = self._netdev or need_netdev
        self.last_plan = the_plan.counts()
        return the_plan

    def _usable(self, s: Service) -> set[str]:
        return {b.key for b in s.backends if s.method != "DR" or b.address in self.l2}

    def status(self) -> dict[str, Any]:
        return {
            "dataplane": self.name,
            "via": self.nft.via,
            "applies": self.applies,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_batch_ms": round(self.nft.last_ms, 3),
            "last_plan": self.last_plan,
            "unsupported": {"/".join(k): v for k, v in self.unsupported.items()},
            "notes": {"/".join(k): list(v) for k, v in self.notes.items() if v},
        }


__all__ = ["Nft", "NftDataplane", "NftError", "resolve_l2"]

"""Test helper (not collected): a minimal VRRP router built from hakeeper's pure core.

Run inside a network namespace by test_vrrp_keepalived_wire.py to face a real keepalived:
raw sockets (proto 112 and 51), `packet.decode`/`encode`, `auth_ah`, and one
`VrrpMachine` per instance driven by a select() loop with `time.monotonic()` as `now`.
Prints one JSON line per state change: {"t": seconds since start, "vrid", "old", "new",
"reason"}. Usage: keepalived_peer.py SRC_DIR DEV SRC_IP CONFIG_JSON
CONFIG_JSON = {"duration": s, "instances": [{"vrid", "version", "priority", "advert_int",
"vips": [...], "auth": "none"|"pass"|"ah", "password", "stop_at": s, "initial": "MASTER"}]}
The first line printed is {"t0": CLOCK_MONOTONIC at start} (shared across namespaces).
"""

from __future__ import annotations

import ipaddress
import json
import select
import socket
import struct
import sys
import time

sys.path.insert(0, sys.argv[1])

from hakeeper.vrrp import auth_ah
from hakeeper.vrrp.machine import (
    SendAdvert,
    State,
    StateChanged,
    VrrpMachine,
    VrrpParams,
)
from hakeeper.vrrp.packet import (
    MCAST_GROUP4,
    Advert,
    AuthType,
    decode,
    encode,
)


def main() -> None:
    dev, src = sys.argv[2], ipaddress.IPv4Address(sys.argv[3])
    cfg = json.loads(sys.argv[4])
    idx = socket.if_nametoindex(dev)
    socks = {}
    for proto in (112, 51):
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, proto)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
        mreq = struct.pack("4s4si", MCAST_GROUP4.packed, src.packed, idx)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, src.packed)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0xC0)
        socks[proto] = s
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
    raw.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, src.packed)
    raw.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)

    t0 = time.monotonic()
    print(json.dumps({"t0": t0}), flush=True)
    machines: dict[int, VrrpMachine] = {}
    conf: dict[int, dict[str, object]] = {}
    ah: dict[int, auth_ah.AhCounter] = {}
    for inst in cfg["instances"]:
        auth = {"none": AuthType.NONE, "pass": AuthType.PASS, "ah": AuthType.AH}[inst["auth"]]
        params = VrrpParams(
            name=f"VI_{inst['vrid']}",
            vrid=inst["vrid"],
            primary_ip=src,
            priority=inst["priority"],
            version=inst["version"],
            advert_int=inst["advert_int"],
            vips=tuple(ipaddress.IPv4Address(v) for v in inst["vips"]),
            auth_type=auth,
            auth_pass=inst.get("password", ""),
            initial_state=State.MASTER if inst.get("initial") == "MASTER" else None,
        )
        machines[params.vrid] = VrrpMachine(params)
        conf[params.vrid] = inst
        ah[params.vrid] = auth_ah.AhCounter()

    def now() -> float:
        return time.monotonic() - t0

    def perform(vrid: int, actions: list[object]) -> None:
        for a in actions:
            if isinstance(a, StateChanged):
                print(
                    json.dumps(
                        {
                            "t": round(now(), 4),
                            "vrid": vrid,
                            "old": a.old.value,
                            "new": a.new.value,
                            "reason": a.reason,
                        }
                    ),
                    flush=True,
                )
            elif isinstance(a, SendAdvert):
                payload = encode(a.advert, src=src, dst=MCAST_GROUP4)
                if a.advert.auth_type is AuthType.AH:
                    seq, ip_id = ah[vrid].next()
                    pkt = auth_ah.encode_ipv4(
                        payload,
                        src=src,
                        dst=MCAST_GROUP4,
                        password=str(conf[vrid].get("password", "")),
                        seq=seq,
                        ip_id=ip_id,
                    )
                    raw.sendto(pkt, (str(MCAST_GROUP4), 0))
                else:
                    socks[112].sendto(payload, (str(MCAST_GROUP4), 0))

    for vrid, m in machines.items():
        perform(vrid, m.start(now()))
    stopped: set[int] = set()
    while now() < cfg["duration"]:
        for vrid, m in machines.items():
            stop_at = conf[vrid].get("stop_at")
            if vrid not in stopped and stop_at is not None and now() >= float(stop_at):  # type: ignore[arg-type]
                perform(vrid, m.shutdown(now()))
                stopped.add(vrid)
        deadlines = [d for m in machines.values() if (d := m.next_deadline()) is not None]
        timeout = max(0.0, min([*deadlines, cfg["duration"]]) - now())
        ready, _, _ = select.select(list(socks.values()), [], [], min(timeout, 0.05))
        for s in ready:
            data = s.recv(4096)
            ihl = (data[0] & 0x0F) * 4
            ttl, proto = data[8], data[9]
            psrc = ipaddress.IPv4Address(data[12:16])
            pdst = ipaddress.IPv4Address(data[16:20])
            if psrc == src:
                continue  # our own, looped back
            if proto == 51:
                vrid = data[ihl + 24 + 1] if len(data) > ihl + 26 else -1
                if vrid not in machines:
                    continue
                got = auth_ah.decode_ipv4(data, password=str(conf[vrid].get("password", "")))
                if not isinstance(got, auth_ah.AhPacket) or not ah[vrid].accept(got.seq):
                    print(json.dumps({"t": round(now(), 4), "error": f"AH {got}"}), flush=True)
                    continue
                payload = got.vrrp
            else:
                payload = data[ihl:]
            adv = decode(payload, src=psrc, dst=pdst, ttl=ttl)
            if not isinstance(adv, Advert):
                print(json.dumps({"t": round(now(), 4), "error": str(adv)}), flush=True)
                continue
            if adv.vrid in machines and adv.vrid not in stopped:
                acts = machines[adv.vrid].on_advert(now(), adv)
                for a in acts:
                    if type(a).__name__ == "DroppedAdvert":
                        print(json.dumps({"t": round(now(), 4), "error": repr(a)}), flush=True)
                perform(adv.vrid, acts)
        for vrid, m in machines.items():
            d = m.next_deadline()
            if vrid not in stopped and d is not None and now() >= d:
                perform(vrid, m.on_timer(now()))


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Regenerate keepalived_adverts.txt: run Debian's keepalived in a throw-away network
# namespace (veth pair, 198.18.200.0/24) and capture its VRRP adverts with tcpdump.
# Needs root. Writes "<src> <dst> <ttl> <hex payload>" lines (VRRP payload only).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ns="hk$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
tmp=$(mktemp -d)
kpid=""
cleanup() {
    if [[ -n "$kpid" ]]; then kill "$kpid" 2>/dev/null || true; wait "$kpid" 2>/dev/null || true; fi
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link add hka type veth peer name hkb
ip -n "$ns" addr add 198.18.200.1/24 dev hka
ip -n "$ns" addr add 198.18.200.2/24 dev hkb
ip -n "$ns" link set lo up
ip -n "$ns" link set hka up
ip -n "$ns" link set hkb up
cat >"$tmp/k.conf" <<CONF
global_defs { router_id golden }
vrrp_instance V2PASS {
    state BACKUP
    interface hka
    virtual_router_id 51
    priority 100
    advert_int 1
    authentication { auth_type PASS
        auth_pass secretpw99 }
    virtual_ipaddress {
        198.18.201.10
        198.18.201.11
    }
}
vrrp_instance V2AH {
    state BACKUP
    interface hka
    virtual_router_id 55
    priority 100
    advert_int 1
    authentication {
        auth_type AH
        auth_pass ahsecret9
    }
    virtual_ipaddress {
        198.18.201.55
    }
}
vrrp_instance V3MC {
    version 3
    state BACKUP
    interface hka
    virtual_router_id 52
    priority 90
    advert_int 0.5
    virtual_ipaddress { 198.18.201.20 }
}
vrrp_instance V3SIX {
    state BACKUP
    interface hka
    virtual_router_id 53
    priority 100
    advert_int 0.5
    virtual_ipaddress {
        fe80::53
        2001:db8::53
    }
}
CONF
sleep 2  # IPv6 link-local DAD
ip netns exec "$ns" tcpdump -i any -w "$tmp/cap.pcap" -U 'ip proto 112 or ip proto 51 or ip6 proto 112' 2>/dev/null &
tpid=$!
sleep 1
ip netns exec "$ns" keepalived -n -l -P -f "$tmp/k.conf" -p "$tmp/k.pid" -r "$tmp/v.pid" \
    >"$tmp/k.log" 2>&1 &
kpid=$!
sleep 6
kill "$kpid"; wait "$kpid" 2>/dev/null || true; kpid=""
sleep 0.5
kill "$tpid"; wait "$tpid" 2>/dev/null || true
python3 - "$tmp/cap.pcap" "$here/keepalived_ah.txt" >"$here/keepalived_adverts.txt" <<'PY'
import struct, sys, ipaddress
data = open(sys.argv[1], "rb").read()
magic = data[:4]
endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
linktype = struct.unpack(endian + "I", data[20:24])[0]
off = 24
seen = set()
ah_rows = []
print("# src dst ttl payload-hex  (captured from keepalived 2.2.7 by capture_keepalived.sh)")
while off + 16 <= len(data):
    _, _, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
    pkt = data[off + 16: off + 16 + incl]
    off += 16 + incl
    if linktype == 1:
        eth = struct.unpack("!H", pkt[12:14])[0]
        pkt = pkt[14:]
    elif linktype == 113:  # Linux cooked v1
        eth = struct.unpack("!H", pkt[14:16])[0]
        pkt = pkt[16:]
    elif linktype == 276:  # Linux cooked v2
        eth = struct.unpack("!H", pkt[0:2])[0]
        pkt = pkt[20:]
    else:
        continue
    if eth == 0x0800:
        ihl = (pkt[0] & 15) * 4
        total = struct.unpack("!H", pkt[2:4])[0]
        ttl, proto = pkt[8], pkt[9]
        src, dst = ipaddress.ip_address(pkt[12:16]), ipaddress.ip_address(pkt[16:20])
        payload = pkt[ihl:total]
    elif eth == 0x86DD:
        plen = struct.unpack("!H", pkt[4:6])[0]
        proto, ttl = pkt[6], pkt[7]
        src, dst = ipaddress.ip_address(pkt[8:24]), ipaddress.ip_address(pkt[24:40])
        payload = pkt[40:40 + plen]
    else:
        continue
    if proto == 51 and eth == 0x0800:
        row = f"{src} {dst} {pkt[:total].hex()}"
        if row not in ah_rows:
            ah_rows.append(row)
        continue
    if proto != 112:
        continue
    key = (str(dst), payload[1], payload[2])
    if key in seen:
        continue
    seen.add(key)
    print(src, dst, ttl, payload.hex())
with open(sys.argv[2], "w") as ah_out:
    ah_out.write("# src dst full-IPv4-packet-hex: keepalived 2.2.7 AH (auth_pass ahsecret9)\n")
    for row in ah_rows[:6]:
        ah_out.write(row + "\n")
PY
echo "wrote $here/keepalived_adverts.txt" >&2

"""Cross-object checks of a keepalived model and keepalived's silent normalisations, said aloud.

keepalived quietly rewrites several settings at start-up (vrrp.c vrrp_complete_instance
and friends; see anchors/keepalived.md §1): it clears `nopreempt` with `state MASTER` or
priority 255, drops weighted `track_script`s of sync-group members (unless
`sync_group_tracking_weight`), truncates `auth_pass` to 8 bytes, rounds a fractional
VRRPv2 `advert_int`, ignores v2 authentication under VRRPv3 or strict mode and forces
VRRPv3 for IPv6. `check_config` reproduces each of these in the model (so the daemon
behaves like keepalived) and reports every one as a warning; it also reports what
keepalived rejects across objects (duplicate VRIDs on one interface, unknown sync-group
members, duplicate virtual/real servers) and the traps it accepts silently.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from hakeeper.conf.diagnostics import Diagnostics, Location
from hakeeper.conf.model import (
    IPAddress,
    KeepalivedConfig,
    SyncGroup,
    TrackRef,
    VirtualServer,
    VrrpInstance,
    VrrpScript,
)

AUTH_PASS_MAX = 8
V3_MAX_ADVERT = 40.95


def check_config(config: KeepalivedConfig, diags: Diagnostics) -> KeepalivedConfig:
    """Return `config` normalised the way keepalived runs it; report every finding."""
    config = _check_trackers(config, diags)
    subnets = _known_subnets(config)
    known = _TrackerNames.of(config)
    instances = [_check_instance(vi, known, subnets, diags) for vi in config.vrrp_instances]
    instances, groups = _check_sync_groups(instances, config.sync_groups, config, known, diags)
    _check_vrids(instances, diags)
    servers = _check_virtual_servers(config, diags)
    return replace(
        config, vrrp_instances=tuple(instances), sync_groups=groups, virtual_servers=servers
    )


def _check_trackers(config: KeepalivedConfig, diags: Diagnostics) -> KeepalivedConfig:
    """Tracker definitions without their target are removed, as keepalived does."""
    scripts = []
    for script in config.vrrp_scripts:
        if script.script.strip():
            scripts.append(script)
        else:
            diags.warning(script.loc, f"vrrp_script {script.name} has no 'script COMMAND'; removed")
    files = []
    for track in config.track_files:
        if track.file:
            files.append(track)
        else:
            diags.warning(track.loc, f"track_file {track.name} has no 'file PATH'; removed")
    procs = []
    for proc in config.track_processes:
        if proc.process:
            procs.append(proc)
        else:
            diags.warning(
                proc.loc, f"vrrp_track_process {proc.name} has no 'process NAME'; removed"
            )
    return replace(
        config, vrrp_scripts=tuple(scripts), track_files=tuple(files), track_processes=tuple(procs)
    )


def _known_subnets(
    config: KeepalivedConfig,
) -> dict[str, list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    """Interface subnets the config itself reveals (static_ipaddress with a prefix)."""
    out: dict[str, list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {}
    default_dev = config.global_defs.default_interface or "eth0"
    for addr in config.static_ipaddresses:
        net = addr.address.network
        if net.prefixlen < net.max_prefixlen:
            out.setdefault(addr.dev or default_dev, []).append(net)
    return out


@dataclass(frozen=True, slots=True)
class _TrackerNames:
    """Names of the defined trackers, computed once (per instance it was quadratic)."""

    scripts: frozenset[str]
    files: frozenset[str]
    processes: frozenset[str]

    @classmethod
    def of(cls, config: KeepalivedConfig) -> _TrackerNames:
        return cls(
            frozenset(s.name for s in config.vrrp_scripts),
            frozenset(t.name for t in config.track_files),
            frozenset(t.name for t in config.track_processes),
        )


def _check_instance(
    vi: VrrpInstance,
    known: _TrackerNames,
    subnets: dict[str, list[ipaddress.IPv4Network | ipaddress.IPv6Network]],
    diags: Diagnostics,
) -> VrrpInstance:
    name = f"vrrp_instance {vi.name}"
    loc = vi.loc
    kw_locs = vi.keyword_locs

    def at(*keys: str) -> Location | None:
        """The line of the first keyword given (else the instance's own line)."""
        return next((kw_locs[k] for k in keys if k in kw_locs), loc)

    if vi.virtual_router_id is None:
        diags.error(loc, f"{name} has no virtual_router_id (1..255)")
    if vi.interface is None and not vi.unicast_peers:
        diags.error(loc, f"{name} has no interface (needed unless unicast_peer is used)")
    if not vi.virtual_ipaddresses:
        diags.warning(loc, f"{name} has no virtual_ipaddress: becoming MASTER will move no address")
    families = {a.address.version for a in vi.virtual_ipaddresses}
    if len(families) > 1:
        diags.error(
            at("virtual_ipaddress"),
            f"{name} mixes IPv4 and IPv6 in virtual_ipaddress; "
            "use virtual_ipaddress_excluded for the other family",
        )
    version = vi.version
    if vi.family == 6 and version != 3:
        diags.warning(
            at("version", "virtual_ipaddress"),
            f"{name} has IPv6 addresses: keepalived always runs VRRPv3 for IPv6 "
            "(version 2 ignored)",
        )
        version = 3
    for src_name, src in (("mcast_src_ip", vi.mcast_src_ip), ("unicast_src_ip", vi.unicast_src_ip)):
        if src is not None and families and src.version not in families:
            diags.error(
                at(src_name),
                f"{name}: {src_name} {src} is not the same family as the virtual addresses",
            )

    advert = vi.advert_int
    if version == 2:
        rounded = float(max(1, round(advert)))
        if rounded != advert:
            diags.warning(
                at("advert_int"),
                f"{name}: advert_int {advert:g} is not a whole number of seconds; "
                "VRRPv2 sends seconds, "
                f"keepalived rounds it to {rounded:g}",
            )
            advert = rounded
    else:
        if advert > V3_MAX_ADVERT:
            diags.error(
                at("advert_int"),
                f"{name}: advert_int {advert:g} is above the VRRPv3 maximum of 40.95 s",
            )
            advert = V3_MAX_ADVERT
        cs = round(advert * 100) / 100
        if cs != advert:
            diags.warning(
                at("advert_int"),
                f"{name}: advert_int {advert:g} rounded to centiseconds ({cs:g}) for VRRPv3",
            )
            advert = cs

    auth_type, auth_pass = vi.auth_type, vi.auth_pass
    if auth_type is not None:
        why = "VRRPv3" if version == 3 else "strict mode" if vi.strict else None
        if why is not None:
            diags.warning(
                at("auth_type", "authentication"),
                f"{name}: authentication is ignored under {why} (keepalived drops it silently)",
            )
            auth_type = auth_pass = None
        elif auth_type == "AH" and vi.family == 6:
            diags.warning(at("auth_type"), f"{name}: auth_type AH is IPv4 only; ignored")
            auth_type = auth_pass = None
        elif auth_type == "PASS" and not auth_pass:
            diags.error(at("auth_type"), f"{name}: auth_type PASS without auth_pass")
    if auth_pass is not None and len(auth_pass.encode()) > AUTH_PASS_MAX:
        cut = auth_pass.encode()[:AUTH_PASS_MAX].decode(errors="ignore")
        diags.warning(
            at("auth_pass"),
            f"{name}: auth_pass is longer than 8 characters; keepalived silently uses only '{cut}'",
        )
        auth_pass = cut

    if auth_type == "AH" and vi.state == "MASTER" and vi.state_configured:
        # keepalived clears the state to BACKUP. The model keeps the configured state (the
        # runtime's start-up behaviour is its own decision); the difference is reported.
        diags.warning(
            at("state"),
            f"{name}: state MASTER is incompatible with AH authentication: keepalived "
            "starts this instance as BACKUP (hakeeper keeps state MASTER)",
        )

    nopreempt, preempt_delay = vi.nopreempt, vi.preempt_delay
    if nopreempt and vi.state == "MASTER" and vi.state_configured:
        diags.warning(
            at("nopreempt"),
            f"{name}: nopreempt needs 'state BACKUP'; with state MASTER keepalived silently clears "
            "nopreempt and this router WILL preempt",
        )
        nopreempt = False
    elif nopreempt and vi.priority == 255:
        diags.warning(
            at("nopreempt"),
            f"{name}: nopreempt is ignored at priority 255 (the address owner always preempts); "
            "keepalived clears it silently",
        )
        nopreempt = False
    if preempt_delay and ((vi.state == "MASTER" and vi.state_configured) or nopreempt or vi.strict):
        diags.warning(
            at("preempt_delay"),
            f"{name}: preempt_delay is ignored with state MASTER, nopreempt or strict mode",
        )
        preempt_delay = 0.0
    if vi.state == "MASTER" and vi.state_configured and vi.priority < 255:
        diags.warning(
            at("state"),
            f"{name}: note: state MASTER at priority {vi.priority} is only a wish; "
            "the highest priority still wins the election",
        )

    if vi.unicast_peers:
        if vi.mcast_dst_ip is not None:
            diags.warning(
                at("mcast_dst_ip"),
                f"{name}: mcast_dst_ip is ignored because unicast_peer is set (adverts go unicast)",
            )
        if vi.strict:
            diags.error(
                at("unicast_peer"),
                f"{name}: strict mode (vrrp_strict/strict_mode) forbids unicast_peer",
            )
        if vi.mcast_src_ip is not None and vi.unicast_src_ip is not None:
            diags.warning(
                at("unicast_src_ip"),
                f"{name}: both mcast_src_ip and unicast_src_ip set; "
                "they are one setting, the last wins",
            )
    elif vi.unicast_src_ip is not None:
        diags.warning(
            at("unicast_src_ip"),
            f"{name}: unicast_src_ip without unicast_peer: adverts are still multicast",
        )
    if vi.strict and vi.state == "MASTER" and vi.state_configured and vi.priority != 255:
        diags.warning(
            at("state"), f"{name}: strict mode expects state MASTER only with priority 255"
        )

    _check_vip_subnets(vi, subnets, diags)
    track_scripts = _check_track_refs(vi.track_scripts, known.scripts, "vrrp_script", name, diags)
    track_files = _check_track_refs(vi.track_files, known.files, "track_file", name, diags)
    track_processes = _check_track_refs(
        vi.track_processes,
        known.processes,
        "vrrp_track_process",
        name,
        diags,
    )
    return replace(
        vi,
        track_scripts=track_scripts,
        track_files=track_files,
        track_processes=track_processes,
        version=version,
        advert_int=advert,
        auth_type=auth_type,
        auth_pass=auth_pass,
        nopreempt=nopreempt,
        preempt_delay=preempt_delay,
    )


def _check_vip_subnets(
    vi: VrrpInstance,
    subnets: dict[str, list[ipaddress.IPv4Network | ipaddress.IPv6Network]],
    diags: Diagnostics,
) -> None:
    srcs = [s for s in (vi.mcast_src_ip, vi.unicast_src_ip) if s is not None]
    for vip in vi.virtual_ipaddresses:
        ip = vip.address.ip
        dev = vip.dev or vi.interface
        known = subnets.get(dev or "", [])
        same_family = [n for n in known if n.version == ip.version]
        if same_family and not any(ip in n for n in same_family):
            nets = ", ".join(str(n) for n in same_family)
            diags.warning(
                vip.loc or vi.loc,
                f"VIP {ip} is outside the known subnet(s) {nets} of {dev}: "
                "gratuitous ARP will not reach a useful neighbour",
            )
            continue
        net = vip.address.network
        if net.prefixlen < net.max_prefixlen and (vip.dev is None or vip.dev == vi.interface):
            for src in srcs:
                if src.version == ip.version and src not in net:
                    diags.warning(
                        vip.loc or vi.loc,
                        f"VIP {vip.address} is outside the subnet of the advert "
                        f"source {src} on {vi.interface}",
                    )


def _check_track_refs(
    refs: tuple[TrackRef, ...], known: frozenset[str], what: str, owner: str, diags: Diagnostics
) -> tuple[TrackRef, ...]:
    """Drop references to undefined trackers (keepalived: "not found, ignoring")."""
    kept = []
    for ref in refs:
        if ref.name in known:
            kept.append(ref)
        else:
            diags.warning(
                ref.loc, f"{owner} tracks unknown {what} '{ref.name}'; keepalived ignores it"
            )
    return tuple(kept)


def _check_sync_groups(
    instances: list[VrrpInstance],
    groups: tuple[SyncGroup, ...],
    config: KeepalivedConfig,
    known: _TrackerNames,
    diags: Diagnostics,
) -> tuple[list[VrrpInstance], tuple[SyncGroup, ...]]:
    by_name = {vi.name: i for i, vi in enumerate(instances)}
    scripts = {s.name: s for s in config.vrrp_scripts}
    member_of: dict[str, str] = {}
    checked: list[SyncGroup] = []
    for group in groups:
        label = f"vrrp_sync_group {group.name}"
        if len(group.group) == 1:
            diags.warning(
                group.loc, f"{label} has only one member; a sync group of one does nothing"
            )
        if not group.group:
            diags.error(group.loc, f"{label} has no 'group {{ ... }}' member list")
        for member in group.group:
            if member not in by_name:
                diags.warning(
                    group.loc, f"{label}: member '{member}' is not a vrrp_instance; ignored"
                )
                continue
            if member in member_of:
                diags.error(
                    group.loc,
                    f"vrrp_instance {member} is already in vrrp_sync_group {member_of[member]}",
                )
                continue
            member_of[member] = group.name
            vi = instances[by_name[member]]
            if not group.sync_group_tracking_weight:
                vi = _drop_weighted_trackers(vi, group.name, scripts, diags)
            instances[by_name[member]] = replace(vi, sync_group=group.name)
        checked.append(
            replace(
                group,
                track_scripts=_check_track_refs(
                    group.track_scripts, known.scripts, "vrrp_script", label, diags
                ),
                track_files=_check_track_refs(
                    group.track_files, known.files, "track_file", label, diags
                ),
                track_processes=_check_track_refs(
                    group.track_processes,
                    known.processes,
                    "vrrp_track_process",
                    label,
                    diags,
                ),
            )
        )
    return instances, tuple(checked)


def _drop_weighted_trackers(
    vi: VrrpInstance, group: str, scripts: dict[str, VrrpScript], diags: Diagnostics
) -> VrrpInstance:
    kept: list[TrackRef] = []
    for ref in vi.track_scripts:
        script = scripts.get(ref.name)
        weight = ref.weight if ref.weight is not None else script.weight if script else 0
        if weight:
            diags.warning(
                ref.loc or vi.loc,
                f"vrrp_instance {vi.name} is in vrrp_sync_group {group}: keepalived silently "
                f"DROPS track_script '{ref.name}' because it has weight {weight} (set weight 0, or "
                "sync_group_tracking_weight in the group)",
            )
            continue
        kept.append(ref)

    def zero(refs: tuple[TrackRef, ...]) -> tuple[TrackRef, ...]:
        out = []
        for ref in refs:
            if ref.weight:
                diags.warning(
                    ref.loc or vi.loc,
                    f"vrrp_instance {vi.name} is in vrrp_sync_group {group}: the weight "
                    f"of tracked '{ref.name}' is set to 0 (down means FAULT)",
                )
            out.append(replace(ref, weight=0) if ref.weight else ref)
        return tuple(out)

    return replace(
        vi,
        track_scripts=tuple(kept),
        track_interfaces=zero(vi.track_interfaces),
        track_files=zero(vi.track_files),
        track_processes=zero(vi.track_processes),
    )


def _check_vrids(instances: list[VrrpInstance], diags: Diagnostics) -> None:
    seen: dict[tuple[str, int, int], VrrpInstance] = {}
    for vi in instances:
        if vi.virtual_router_id is None or vi.interface is None or vi.unicast_peers:
            continue
        key = (vi.interface, vi.family, vi.virtual_router_id)
        other = seen.get(key)
        if other is not None:
            diags.error(
                vi.keyword_locs.get("virtual_router_id", vi.loc),
                f"vrrp_instance {vi.name} uses virtual_router_id {vi.virtual_router_id} on "
                f"{vi.interface} (IPv{vi.family}) like vrrp_instance {other.name}: "
                "the routers would fight",
            )
            continue
        seen[key] = vi


def _check_virtual_servers(
    config: KeepalivedConfig, diags: Diagnostics
) -> tuple[VirtualServer, ...]:
    groups = {g.name for g in config.virtual_server_groups}
    seen: dict[tuple[str, ...], VirtualServer] = {}
    out: list[VirtualServer] = []
    for vs in config.virtual_servers:
        label = f"virtual_server {vs.label}"
        if vs.group is not None and vs.group not in groups:
            diags.error(vs.loc, f"{label}: no virtual_server_group named '{vs.group}'")
        if vs.key in seen:
            diags.error(vs.loc, f"{label} ({vs.protocol}) is defined twice; the second is ignored")
            continue
        seen[vs.key] = vs
        if not vs.real_servers and vs.sorry_server is None:
            diags.warning(vs.loc, f"{label} has no real_server")
        rs_seen: set[tuple[IPAddress, int | None]] = set()
        for rs in vs.real_servers:
            if rs.key in rs_seen:
                diags.error(
                    rs.loc,
                    f"real_server {rs.ip} {rs.port or ''} appears twice in {label}".replace(
                        "  ", " "
                    ),
                )
            rs_seen.add(rs.key)
            if not rs.checkers:
                diags.warning(
                    rs.loc,
                    f"real_server {rs.ip} in {label} has no health checker: it is always "
                    "considered up and never taken out",
                )
        out.append(vs)
    return tuple(out)

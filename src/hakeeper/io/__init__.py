"""hakeeper.io: thin adapters between the pure cores and the Linux kernel.

vrrp_socket (raw IP protocol 112/51 sockets) · ah (keepalived's VRRPv2 AH wrapping) ·
netlink (VIPs, routes, rules, VMACs via pyroute2) · linkwatch (RTMGRP_LINK events) ·
arp (gratuitous ARP / unsolicited NA) · scripts (subprocesses with timeouts).
Sockets live in the network namespace of the thread that creates them.
"""

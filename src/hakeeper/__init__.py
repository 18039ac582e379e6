"""hakeeper: a Python re-implementation of the keepalived (VRRP + LVS) and nginx HA tier."""

__version__ = "0.1.0"

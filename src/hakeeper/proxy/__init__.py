"""The L7 HTTP/1.1 reverse proxy (nginx `proxy_pass` + `upstream`) on uvloop and httptools.

Modules: `config` (frozen settings, nginx defaults, header rules), `balancer` (the
selection seam + a round-robin fallback), `framing` (pure HTTP/1.1 rules), `http1`
(client connections), `upstream` (backend connections + keep-alive pool), `engine`
(per-worker state and timeouts), `server` (SO_REUSEPORT workers, hitless reload).
"""

from hakeeper.proxy.balancer import Balancer, RoundRobin
from hakeeper.proxy.config import (
    HeaderRule,
    Limits,
    Peer,
    ProxyConfig,
    RetryPolicy,
    Timeouts,
    forwarding_headers,
    header_rule,
    keepalive_headers,
    nginx_default_headers,
)
from hakeeper.proxy.engine import Engine, Stats

__all__ = [
    "Balancer",
    "Engine",
    "HeaderRule",
    "Limits",
    "Peer",
    "ProxyConfig",
    "RetryPolicy",
    "RoundRobin",
    "Stats",
    "Timeouts",
    "forwarding_headers",
    "header_rule",
    "keepalive_headers",
    "nginx_default_headers",
]

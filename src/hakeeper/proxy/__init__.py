"""The L7 HTTP/1.1 reverse proxy (nginx `proxy_pass` + `upstream`) on uvloop and httptools.

Modules:
- settings and pure rules: `config` (frozen settings, nginx defaults, header rules),
  `balancer` (the selection seam + a round-robin fallback), `framing` (HTTP/1.1 rules),
  `routes` (server_name, locations, `return`, variables), `rewrite` (rewrite/set/if,
  allow/deny), `static` (root/alias/index/try_files/error_page answers), `redirect` and
  `response_headers` (proxy_redirect, add_header, hidden upstream fields);
- the client connection, one class built up by single inheritance: `client_state`
  (state, timeouts, drain), `client_forward` (upstream pick, request relay),
  `client_response` (response relay, retries, errors, Upgrade), `http1`
  (`ClientProtocol`: the httptools callbacks), `routed` (routed listeners), `static_io`
  (files sent with sendfile);
- `upstream` (backend connections + keep-alive pool), `engine` (per-worker state and
  timeouts), `tls` (listen ... ssl, SNI, proxy_pass https://), `health`,
  `health_probes`, `health_shared` (nginx Plus active checks run once in the master,
  verdicts in shared memory), `stream` (nginx `stream {}` on the L4 relay);
- processes: `server` (SO_REUSEPORT workers, hitless reload), `from_nginx` (nginx.conf
  model to engines), `run` (`hakeeper run --nginx`).
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

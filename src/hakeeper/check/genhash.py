"""`hakeeper genhash`: the digest an HTTP_GET / SSL_GET `url { digest }` line needs.

Replaces keepalived's `genhash` (`keepalived -T`): same options (-s server, -p port, -u url,
-S ssl, -I sni, -V virtualhost, -P 1.0|1.0c|1.1, -t timeout, -v verbose) and the same
answer: the request the checker sends, and the MD5 (or `-H sha1|sha256|...`) of the raw
response body printed as lowercase hex, which is what the checker compares.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ipaddress
import socket
import sys

from hakeeper.check.probe_stream import (
    body_digest,
    build_request,
    client_tls_context,
    fetch,
    host_header,
    parse_response,
)
from hakeeper.check.probes import Target


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "genhash",
        help="compute the digest of an HTTP/HTTPS url for HTTP_GET/SSL_GET (keepalived genhash)",
        description="Fetch a url the way HTTP_GET/SSL_GET does and print the body's digest.",
    )
    p.add_argument("-s", "--server", required=True, help="server address (IPv4/IPv6 or name)")
    p.add_argument("-p", "--port", type=int, default=None, help="port (default 80, 443 with -S)")
    p.add_argument("-u", "--url", required=True, help="url path, e.g. /index.html")
    p.add_argument("-S", "--use-ssl", action="store_true", help="use TLS (SSL_GET)")
    p.add_argument("-I", "--use-sni", action="store_true", help="send SNI (the virtualhost)")
    p.add_argument("-V", "--use-virtualhost", dest="virtualhost", help="Host: header value")
    p.add_argument(
        "-P", "--protocol", default="1.0", choices=["1.0", "1.0c", "1.0C", "1.1"],
        help="HTTP protocol: 1.0, 1.0c (1.0 + Connection: close) or 1.1",
    )  # fmt: skip
    p.add_argument("-H", "--hash", default="md5", help="md5 (default), sha1, sha256, ...")
    p.add_argument("-t", "--timeout", type=float, default=5.0, help="seconds (default 5)")
    p.add_argument("-v", "--verbose", action="store_true", help="show request and headers")
    p.set_defaults(handler=run)


def _resolve(server: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(server.strip("[]"))
    except ValueError:
        info = socket.getaddrinfo(server, None, type=socket.SOCK_STREAM)
        return ipaddress.ip_address(info[0][4][0])


def run(args: argparse.Namespace) -> int:
    try:
        hashlib.new(args.hash)
    except ValueError:
        print(f"genhash: unknown hash {args.hash!r}", file=sys.stderr)
        return 2
    try:
        ip = _resolve(args.server)
    except OSError as exc:
        print(f"genhash: cannot resolve {args.server}: {exc}", file=sys.stderr)
        return 1
    port = args.port if args.port else (443 if args.use_ssl else 80)
    target = Target(ip, port)
    tls = client_tls_context() if args.use_ssl else None
    sni = args.virtualhost if args.use_sni else None
    if args.verbose:
        host = host_header(target, args.virtualhost, tls is not None)
        request = build_request(args.url, host, args.protocol).decode("latin-1")
        print("-----------------------[ HTTP request ]-----------------------")
        print(request.rstrip("\r\n").replace("\r\n", "\n"))
    try:
        raw = asyncio.run(
            asyncio.wait_for(
                fetch(
                    target,
                    args.url,
                    virtualhost=args.virtualhost,
                    protocol=args.protocol,
                    tls=tls,
                    sni=sni,
                ),
                args.timeout,
            )
        )
    except TimeoutError:
        print(f"genhash: timeout after {args.timeout:g}s", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"genhash: {target.label()}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    resp = parse_response(raw)
    if resp is None:
        print("genhash: malformed HTTP response", file=sys.stderr)
        return 1
    if args.verbose:
        print("-----------------------[ HTTP header ]-----------------------")
        print(resp.head.decode("latin-1").replace("\r\n", "\n"))
        print(f"-----------------------[ body: {len(resp.body)} bytes, status {resp.status} ]")
    print(body_digest(resp.body, args.hash))
    return 0

"""The client protocol of a routed listener: server_name, locations, `return`, URI parts.

`RoutedClientProtocol` extends `http1.ClientProtocol` for listeners whose engine carries
a `routes.RouteTable` (several servers or locations). Request headers are all kept until
the head is complete, because the Host header, and with it the virtual server, may come
last; then the request is routed as nginx does (`routes.VirtualServer.find` on the
normalized URI), and either answered by its `return` (in order with pipelined requests,
any body discarded) or bound to the child engine of its location: that location's
`proxy_set_header` rules, `proxy_pass` URI part, balancer (with a `hash` key rendered
from nginx variables), timeouts and retries. Everything after that runs on the plain
protocol's code with `self.engine` switched to the child while the request is active.
"""

from __future__ import annotations

import asyncio
import os

from hakeeper.proxy.config import ROUTED_VARIABLES, VARIABLES
from hakeeper.proxy.engine import Engine
from hakeeper.proxy.framing import CRLF, RequestFacts, origin_form, request_status
from hakeeper.proxy.http1 import (
    _TE_CHUNKED,
    ALL_HEADERS,
    B_QUEUE,
    ClientProtocol,
    Request,
    _RejectError,
    _remember_host,
)
from hakeeper.proxy.rewrite import run_phases
from hakeeper.proxy.routes import (
    BadUriError,
    Location,
    Proxied,
    Redirect,
    RequestView,
    Return,
    RouteTable,
    Template,
    VirtualServer,
    normalize_path,
    split_target,
    upstream_target,
    variable,
)
from hakeeper.proxy.static import Answer, SendFile, ToProxy, error_outcome, has_page, resolve
from hakeeper.proxy.static_io import FileSender, open_file, stat_file

NOT_FOUND = Return(404, None)  # no location matched (nginx would look for a file)
FILE = Return(200, None)  # marks a request answered from a file (`files` holds which)
# header-rule variables the engine's compiled rules render (the rest: routes.variable)
_FRAMING_VARIABLES = VARIABLES - ROUTED_VARIABLES


class RoutedClientProtocol(ClientProtocol):
    """A downstream connection on a listener with a routing table."""

    __slots__ = (
        "addr_key",
        "files",
        "local_addr",
        "local_port",
        "pages",
        "sender",
        "table",
    )

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        # http1.on_header: all pairs when a variable may read them; names every location
        # drops are dropped on arrival, those only some drop are marked (on_headers_complete)
        self.keep = ALL_HEADERS if engine.keep_headers else None
        some = engine.drop_some
        self.drop = engine.drop_all | some if some else engine.drop_all
        self.drop_some = some or None
        table = engine.routes
        assert table is not None
        self.table: RouteTable = table
        self.addr_key = ""
        self.local_addr = b""
        self.local_port = b""
        self.files: dict[int, SendFile] = {}  # id(request) -> the file it is answered with
        self.sender: FileSender | None = None
        # proxied requests whose location has error pages (for a failed upstream)
        self.pages: list[tuple[Request, VirtualServer, ToProxy]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.addr_key = self.key
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple) and len(local) >= 2:
            self.local_addr = str(local[0]).encode("ascii")
            self.local_port = str(local[1]).encode("ascii")
        else:
            self.local_port = str(self.table.port).encode("ascii")

    # -- httptools callbacks ------------------------------------------------------------
    def on_headers_complete(self) -> None:
        req = self.cur
        assert req is not None
        req.headers_done = True
        parser = self.parser
        home = self.home
        req.method = method = parser.get_method()
        req.version = version = parser.get_http_version()
        keep = parser.should_keep_alive()
        if parser.should_upgrade():
            if method == b"CONNECT":
                raise _RejectError(405)
            req.is_upgrade = True
        line_host = b""
        if req.target[:1] != b"/":
            low = req.target[:8].lower()
            if low.startswith((b"http://", b"https://")):
                # nginx prefers the request line's host to the Host header ($host)
                authority = req.target.split(b"/", 3)[2]
                line_host = authority.rpartition(b"@")[2]
            try:
                req.target = origin_form(req.target, method)
            except ValueError:
                raise _RejectError(400) from None
        if not (
            version == "1.1"
            and req.host_count == 1
            and (home.hosts_ok.get(req.host) or _remember_host(home.hosts_ok, req.host))
        ):
            status = request_status(version, req.host_count, req.host, req.clen, 0)
            if status:
                raise _RejectError(status)
        path, args = split_target(req.target)
        if req.target == b"*":
            path = b"*"
        try:
            uri, quoted = normalize_path(path) if path[:1] == b"/" else (path, False)
        except BadUriError:
            raise _RejectError(400) from None
        server, host = self.table.server_for_raw(line_host or req.host)
        action: Return | Proxied
        prefix = b""
        found = None
        static: Location | None = None  # a location with files, try_files or error_page
        if self.table.scripted:  # rewrite/set/allow/deny/captures: proxy/rewrite.py
            action, static = self._phases(req, server, host, uri=uri, quoted=quoted, args=args)
        elif server.server_return is not None:
            action = server.server_return
        else:
            found = server.find(uri)
            if found is None:
                action = NOT_FOUND
            elif isinstance(found, Redirect):
                target = found.pattern + b"?" + args if args else found.pattern
                action = Return(301, Template((target,)))
            elif found.files is not None:
                static, action = found, NOT_FOUND  # decided by static.resolve below
            else:
                action = found.action  # type: ignore[assignment]  # a Static has files
                prefix = found.prefix
        if self.served >= home.ka_requests or self.draining:
            keep = False
        req.keep_alive = keep
        home.stats.requests += 1
        req.start = home.now
        if req.view is None and (
            isinstance(action, Return)
            or static is not None
            or action.key is not None
            or home.children[action].routed_headers
        ):
            req.view = self._view(req, server, host, uri, args)
        uri_part = action.uri if isinstance(action, Proxied) and not self.table.scripted else None
        if static is not None:
            assert req.view is not None
            if action is NOT_FOUND or not isinstance(action, Return):
                outcome = resolve(server, static, req.view, stat_file)
            else:  # `return CODE`, deny, ... in the rewrite/access phases
                outcome = error_outcome(server, static, action.code, req.view, stat_file)
            req.view = outcome.view
            if isinstance(outcome, Answer):
                action = outcome.ret
            elif isinstance(outcome, SendFile):
                self.files[id(req)] = outcome
                action = FILE
            else:
                action, prefix = outcome.proxied, outcome.prefix
                if outcome.where.files is not None and outcome.where.files.error_pages:
                    self._keep_pages(req, server, outcome)
                uri_part = action.uri
                if outcome.target is not None:  # an internal redirect changed the URI
                    req.request_uri = req.target
                    req.target = outcome.target
                    uri_part = None
        if isinstance(action, Return):
            req.ret = action
            self._begin(req)
            return
        child = home.children[action]
        req.engine = child
        if child.config.limits.max_body and req.clen > child.config.limits.max_body:
            raise _RejectError(413)
        if uri_part is not None:
            req.request_uri = req.target
            req.target = upstream_target(uri_part, prefix, uri, quoted, args)
        if action.key is not None:
            assert req.view is not None
            req.hkey = action.key.render(req.view).decode("utf-8", "replace")
        if req.maybe is not None:
            drop = child.drop
            for index, low in reversed(req.maybe):
                if low in drop:
                    del req.lines[index]
        if (child.routed_headers or action.renders) and not (
            req.chunked and not child.up_version.endswith(b"1.1\r\n")
        ):
            req.head = self._routed_head(req, child, _TE_CHUNKED if req.chunked else b"")
        elif req.chunked:
            if child.up_version.endswith(b"1.1\r\n"):
                req.head = self._build_head(req, _TE_CHUNKED, child)
            else:
                req.buffer_all = True  # HTTP/1.0 upstream: needs a Content-Length
        elif not child.rules.dynamic:
            req.head = b"".join(
                (method, b" ", req.target, child.up_version, child.static_rules, *req.lines, CRLF)
            )
        else:
            req.head = self._build_head(req, b"", child)
        self._begin(req)

    def _view(
        self, req: Request, server: VirtualServer, host: bytes, uri: bytes, args: bytes
    ) -> RequestView:
        """What variables, `return`s, static answers and keyed balancers read of the
        request (the listener's scheme: https on `listen ... ssl`)."""
        return RequestView(
            method=req.method,
            target=req.target,
            path=uri,
            args=args,
            host=host,
            headers=req.extra or (),
            remote_addr=self.remote_addr,
            remote_port=self.remote_port,
            server_name=server.primary_name.encode("latin-1"),
            server_port=self.local_port,
            server_addr=self.local_addr,
            scheme=self.home.config.scheme.encode("ascii"),
        )

    def _phases(
        self,
        req: Request,
        server: VirtualServer,
        host: bytes,
        *,
        uri: bytes,
        quoted: bool,
        args: bytes,
    ) -> tuple[Return | Proxied, Location | None]:
        """The rewrite and access phases (`routes.RouteTable.scripted`): the action, or
        the location whose static files answer. The request's view keeps the captures
        and variables; a rewritten request-target replaces the client's."""
        req.view = view = self._view(req, server, host, uri, args)
        names = self.table.names
        match = names.select_match(host)[1] if names.regexes else None
        outcome = run_phases(server, view, quoted, match)
        action = outcome.action
        if isinstance(action, Return):
            loc = outcome.location
            if loc is not None and action.text is None and has_page(loc, action.code):
                return action, loc  # answered by its error_page (proxy/static.py)
            return action, None
        if isinstance(action, Proxied):
            if outcome.target is not None:
                req.request_uri = req.target
                req.target = outcome.target
            return action, None
        return NOT_FOUND, outcome.location  # static files (proxy/static.py)

    def _routed_head(self, req: Request, child: Engine, framing: bytes) -> bytes:
        """The upstream head when a `proxy_set_header` reads a variable only routing
        knows (`$uri`, `$args`, `$arg_NAME`, `$server_port`, ...): every rule rendered
        here, the first one per name winning like nginx."""
        view = req.view
        assert view is not None
        facts = RequestFacts(
            host=req.host,
            remote_addr=self.remote_addr,
            remote_port=self.remote_port,
            xff=req.xff,
            upgrade=req.upgrade,
            connection=req.connection,
            target=req.request_uri or req.target,
            extra=tuple(req.extra or ()),
        )
        rules = child.rules
        out = [req.method, b" ", req.target, child.up_version]
        seen: set[bytes] = set()
        for rule in child.config.headers:
            low = rule.lower
            if low in seen:
                continue
            seen.add(low)
            value = b"".join(
                part
                if isinstance(part, bytes)
                else variable(part, view)
                if not (part in _FRAMING_VARIABLES or part.startswith("http_"))
                else rules.variable(part, facts)
                for part in rule.parts
            )
            if value:
                out.append(rule.name.encode("latin-1") + b": " + value + CRLF)
        out.extend(req.lines)
        out.append(framing)
        out.append(CRLF)
        return b"".join(out)

    def _begin(self, req: Request) -> None:
        if self.active is None:
            self.active = req
            if req.expect:
                self._start(req)
            else:
                self._try(req)
        else:
            self.queue.append(req)
            self.block(B_QUEUE)

    def on_body(self, body: bytes) -> None:
        req = self.cur
        assert req is not None
        if req.ret is not None:
            req.received += len(body)  # discarded, like ngx_http_discard_request_body
            return
        engine = self.engine
        if req.engine is not None and req is not self.active:
            self.engine = req.engine  # its own client_max_body_size
        try:
            super().on_body(body)
        finally:
            self.engine = engine

    def on_message_complete(self) -> None:
        req = self.cur
        assert req is not None
        if req.ret is None:
            super().on_message_complete()
            return
        self.cur = None
        req.complete = True
        if req is self.active:
            self._answer(req)

    # -- relaying -----------------------------------------------------------------------
    def _try(self, req: Request) -> None:
        if req.ret is not None:
            if req.complete:
                self._answer(req)
            return  # answered once its body has been read (on_message_complete)
        child = req.engine
        assert child is not None
        self.engine = child
        self.key = req.hkey if req.hkey is not None else self.addr_key
        super()._try(req)

    def _answer(self, req: Request) -> None:
        ret = req.ret
        assert ret is not None and req.view is not None
        # after an Upgrade request the bytes that follow are not HTTP: close after it
        keep = req.keep_alive and req.complete and not self.draining and not req.is_upgrade
        if ret is FILE:
            self._send_file(req, keep)
            return
        data, keep = ret.response(req.view, keep, req.method == b"HEAD")
        req.responded = True
        req.keep_alive = keep
        if data:
            self._write(data)
        self.home.stats.responses += 1
        self._finish(req)

    # -- static files (proxy/static.py, proxy/static_io.py) --------------------------------
    def _send_file(self, req: Request, keep: bool) -> None:
        plan, fd = open_file(self.files.pop(id(req)), keep)
        req.responded = True
        req.keep_alive = plan.keep
        transport = self.transport
        if fd < 0 or transport is None or self.closed:
            if fd >= 0:
                os.close(fd)
            self._write(plan.head)
            self._file_done(req)
            return
        sender = self.sender = FileSender(transport, fd, plan)
        if sender.pump():
            self._file_done(req)

    def _keep_pages(self, req: Request, server: VirtualServer, proxied: ToProxy) -> None:
        active, queue = self.active, self.queue
        self.pages = [e for e in self.pages if e[0] is active or e[0] in queue]
        self.pages.append((req, server, proxied))

    def _respond_error(self, status: int) -> None:
        """A proxied request failed (502/504): its location's `error_page`, if any."""
        req = self.active
        entry = next((e for e in self.pages if e[0] is req), None)
        if req is None or entry is None or not has_page(entry[2].where, status):
            super()._respond_error(status)
            return
        _, server, proxied = entry
        outcome = error_outcome(server, proxied.where, status, proxied.view, stat_file)
        if isinstance(outcome, ToProxy):  # an error page that proxies: not followed
            super()._respond_error(status)
            return
        keep = req.keep_alive and req.complete and not self.draining
        req.view = outcome.view
        if isinstance(outcome, SendFile):
            self.files[id(req)] = outcome
            self._send_file(req, keep)
            return
        data, keep = outcome.ret.response(outcome.view, keep, req.method == b"HEAD")
        req.responded = True
        req.keep_alive = keep
        if data:
            self._write(data)
        self._finish(req)

    def _file_done(self, req: Request) -> None:
        self.sender = None
        self.home.stats.responses += 1
        self._finish(req)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.sender is not None:
            self.sender.paused = True

    def resume_writing(self) -> None:
        super().resume_writing()
        sender = self.sender
        if sender is not None:
            sender.paused = False
            req = self.active
            if sender.pump() and req is not None:
                self._file_done(req)

    def connection_lost(self, exc: Exception | None) -> None:
        sender = self.sender
        if sender is not None:
            self.sender = None
            sender.close()
        self.files.clear()
        super().connection_lost(exc)

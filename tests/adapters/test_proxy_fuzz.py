"""Arbitrary client bytes never crash the proxy nor leak a connection (hypothesis).

After each case the client half-closes and reads until the proxy closes; then the test
checks that no client or busy upstream connection is left and that a normal request
still gets 200 from the same engine.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_proxy_support import Backend, proxy_with, request, run, send_split_and_drain, wait_for

from hakeeper.proxy.config import Limits, Timeouts

PIECES = [
    b"GET / HTTP/1.1\r\n",
    b"POST /p HTTP/1.1\r\n",
    b"GET /ws HTTP/1.1\r\n",
    b"HEAD / HTTP/1.0\r\n",
    b"Host: x\r\n",
    b"Host: y\r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: 0\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Expect: 100-continue\r\n",
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n",
    b"Connection: close\r\n",
    b"X-Folded: a\r\n b\r\n",
    b"\r\n",
    b"abc",
    b"3\r\nabc\r\n",
    b"0\r\n\r\n",
    b"\x00\xff",
    b" ",
]

client_bytes = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(PIECES), max_size=12).map(b"".join),
    st.tuples(
        st.lists(st.sampled_from(PIECES), max_size=8).map(b"".join), st.binary(max_size=40)
    ).map(lambda t: t[0] + t[1]),
)


async def _case(data: bytes, split: int) -> None:
    backend = Backend()
    timeouts = Timeouts(client_header=1, client_body=1, proxy_read=1, keepalive=1)
    async with proxy_with([backend], timeouts=timeouts, limits=Limits(max_body=64)) as px:
        engine = px.engine
        await send_split_and_drain(px.port, data, split)
        await wait_for(lambda: not engine.clients, limit=5.0)
        await wait_for(lambda: len(engine.upstreams) <= engine.pool.idle(), limit=5.0)
        resp = await request(px.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert resp.status == 200
        await wait_for(lambda: not engine.clients, limit=5.0)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=client_bytes, split=st.integers(min_value=0, max_value=200))
def test_arbitrary_client_bytes_never_crash_or_leak(data: bytes, split: int) -> None:
    run(_case(data, min(split, len(data))), limit=30)

"""Pure load-balancing algorithms: IPVS schedulers and nginx upstream methods, by name.

`LVS_SCHEDULERS` maps keepalived's `lb_algo`/`lvs_sched` names to factories returning a
fresh `Scheduler` (`pick(servers, flow)`); `NGINX_BALANCERS` maps nginx upstream methods to
factories `(servers, *, rng=None) -> UpstreamBalancer`. Config readers validate names against
these tables; data planes instantiate from them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from hakeeper.balance.lvs import (
    Flow,
    LeastConnection,
    LocalityLeastConnection,
    LocalityLeastConnectionReplicated,
    NeverQueue,
    RealServer,
    RoundRobin,
    Scheduler,
    ShortestExpectedDelay,
    WeightedFailover,
    WeightedLeastConnection,
    WeightedOverflow,
    WeightedRoundRobin,
    WeightedTwoChoices,
)
from hakeeper.balance.lvs_hash import DestinationHash, MaglevHash, SourceHash
from hakeeper.balance.nginx import (
    LeastConnBalancer,
    Peer,
    RandomBalancer,
    RandomTwoBalancer,
    UpstreamBalancer,
    UpstreamRequest,
    UpstreamServer,
)
from hakeeper.balance.nginx_hash import ChashBalancer, HashBalancer, IpHashBalancer
from hakeeper.balance.persistence import PersistenceTable, Persistent

LVS_SCHEDULERS: dict[str, Callable[[], Scheduler]] = {
    "rr": RoundRobin,
    "wrr": WeightedRoundRobin,
    "lc": LeastConnection,
    "wlc": WeightedLeastConnection,
    "sed": ShortestExpectedDelay,
    "nq": NeverQueue,
    "sh": SourceHash,
    "dh": DestinationHash,
    "mh": MaglevHash,
    "lblc": LocalityLeastConnection,
    "lblcr": LocalityLeastConnectionReplicated,
    "fo": WeightedFailover,
    "ovf": WeightedOverflow,
    "twos": WeightedTwoChoices,
}

#: LVS schedulers that need live connection counts (nftables cannot express them).
CONNECTION_COUNT_SCHEDULERS = frozenset({"lc", "wlc", "sed", "nq", "lblc", "lblcr", "ovf", "twos"})

BalancerFactory = Callable[..., UpstreamBalancer]

NGINX_BALANCERS: dict[str, BalancerFactory] = {
    "round_robin": UpstreamBalancer,
    "least_conn": LeastConnBalancer,
    "ip_hash": IpHashBalancer,
    "hash": HashBalancer,
    "hash_consistent": ChashBalancer,
    "random": RandomBalancer,
    "random_two": RandomTwoBalancer,
}


def make_balancer(
    method: str, servers: Sequence[UpstreamServer], *, rng: random.Random | None = None
) -> UpstreamBalancer:
    """Build the nginx balancer named `method` (a key of NGINX_BALANCERS)."""
    try:
        factory = NGINX_BALANCERS[method]
    except KeyError:
        raise ValueError(f"unknown upstream balancing method {method!r}") from None
    return factory(servers, rng=rng)


__all__ = [
    "CONNECTION_COUNT_SCHEDULERS",
    "LVS_SCHEDULERS",
    "NGINX_BALANCERS",
    "Flow",
    "Peer",
    "PersistenceTable",
    "Persistent",
    "RealServer",
    "Scheduler",
    "UpstreamBalancer",
    "UpstreamRequest",
    "UpstreamServer",
    "make_balancer",
]

"""hakeeper.lab: network-namespace toolkit and (later) the `hakeeper lab` failover scenarios."""

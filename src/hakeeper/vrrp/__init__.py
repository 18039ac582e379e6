"""hakeeper.vrrp package."""

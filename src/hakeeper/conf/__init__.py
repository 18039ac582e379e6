"""hakeeper.conf package."""

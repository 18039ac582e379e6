"""hakeeper.io package."""

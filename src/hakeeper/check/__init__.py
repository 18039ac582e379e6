"""hakeeper.check package."""

"""hakeeper.runtime package."""

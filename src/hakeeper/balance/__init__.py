"""hakeeper.balance package."""

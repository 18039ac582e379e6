"""Allows `python -m hakeeper`."""

from hakeeper.cli import main

raise SystemExit(main())

"""hma-check: is this Exchange organisation ready for Hybrid Modern Authentication? Evidence, verdict, runbooks."""

__version__ = "0.1.0"

__all__ = ["__version__"]

"""pullcheck: diagnose image pulls from the container runtime's own vantage point."""

__version__ = "0.1.0"

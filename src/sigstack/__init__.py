"""sigstack: a complete private Sigstore in one command."""

__version__ = "0.1.0"

"""lvsd: a health-checking director daemon for Linux Virtual Server (IPVS)."""

__version__ = "0.1.0"

"""Beacon: tracking pixel, signed first-party cookies, events via Redis into ClickHouse."""

__version__ = "0.1.0"

"""Fixtures shared by several integration files, defined in tests/support."""

from tests.support.shipped_broker import broker, peers, pki

__all__ = ["broker", "peers", "pki"]

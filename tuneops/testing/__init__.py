"""Fakes and protocol stubs shipped with tuneops (like httpx's MockTransport).

Real HTTP servers that speak a provider's documented protocol, for tests and benchmarks where
the real cloud cannot be reached from the machine.
"""

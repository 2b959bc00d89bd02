"""In-process HTTP emulators of the cloud provider APIs, for tests and demos."""

from __future__ import annotations

from ..providers.endpoints import EndpointPolicy

# The sandboxes listen on loopback over plain http, which the endpoint policy refuses unless allowed:
# the demo and the tests allow it explicitly, as a user running the sandbox in a cluster would.
LOOPBACK_ENDPOINTS = ("http://127.0.0.1", "http://[::1]", "http://localhost")
LOOPBACK = EndpointPolicy.parse(LOOPBACK_ENDPOINTS)

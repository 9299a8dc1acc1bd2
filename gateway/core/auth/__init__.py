"""SIP digest authentication, server side (RFC 3261 §22, RFC 7616, RFC 8760), sans-IO.

- :mod:`gateway.core.auth.algorithms`: the hash functions and HA1.
- :mod:`gateway.core.auth.credentials`: ``parse_credentials_untrusted`` for (Proxy-)Authorization.
- :mod:`gateway.core.auth.nonce`: stateless HMAC nonces and nonce-count replay protection.
- :mod:`gateway.core.auth.digest`: the authenticator: challenges and typed outcomes.
- :mod:`gateway.core.auth.failures`: the per-source failure counter that turns into 403.
"""

from __future__ import annotations

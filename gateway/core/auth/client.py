"""Digest authentication as a client: answering a 401/407 challenge (RFC 3261 §22.2-22.3,
RFC 7616 §3.4, RFC 8760).

The gateway is a client when a trunk challenges the requests we send it (carriers that register
their customers, PBXs that authenticate every INVITE): ``[[trunks]] username``/``password``
answer them. Sans-IO: the cnonce comes from the caller (an injected id source), and nothing here
logs or puts the password, HA1 or the response in an error message.

Choice of challenge: a response may carry several (one per algorithm, RFC 8760 §2.4, most
preferred first). We take the first whose algorithm we know (MD5, SHA-256, SHA-512-256; the
``-sess`` variants are not supported) and whose qop list, if any, offers ``auth``. Without a qop
list the server speaks RFC 2069 and the response is computed without qop (RFC 7616 §3.4.1).
"""

from __future__ import annotations

import attrs

from gateway.core.auth.algorithms import DigestAlgorithm, compute_ha1, compute_response
from gateway.core.auth.credentials import (
    MalformedCredentials,
    _parse_params,
    quote,
)
from gateway.core.sip.message import Request, Response

MAX_CHALLENGE_LENGTH = 4096
"""Longer WWW-/Proxy-Authenticate values are not parsed."""
MAX_CHALLENGE_PARAMS = 16


@attrs.frozen
class DigestChallenge:
    """One Digest WWW-Authenticate or Proxy-Authenticate value (RFC 7616 §3.3)."""

    realm: str
    nonce: str
    algorithm: DigestAlgorithm
    qop_auth: bool
    """The server offered qop=auth (else: no qop, RFC 2069 style)."""
    opaque: str | None = None


def parse_challenge_untrusted(value: str) -> DigestChallenge | None:
    """The challenge in ``value``, or None when it is not Digest, is malformed, or asks for what
    we cannot do (an unknown or ``-sess`` algorithm, a qop list without ``auth``)."""
    if len(value) > MAX_CHALLENGE_LENGTH:
        return None
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    try:
        params = _parse_params(rest, 0, MAX_CHALLENGE_PARAMS)
    except MalformedCredentials:
        return None
    realm, nonce = params.get("realm"), params.get("nonce")
    algorithm = DigestAlgorithm.from_token(params.get("algorithm", "MD5"))
    if realm is None or not nonce or algorithm is None:
        return None
    qop = params.get("qop")
    offered = {token.strip().lower() for token in qop.split(",")} if qop is not None else set()
    if qop is not None and "auth" not in offered:
        return None  # auth-int only: we do not hash bodies
    return DigestChallenge(realm, nonce, algorithm, qop is not None, params.get("opaque"))


def usable_challenge(response: Response) -> DigestChallenge | None:
    """The first challenge of a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate) we can
    answer, in the server's order of preference."""
    name = "Proxy-Authenticate" if response.status == 407 else "WWW-Authenticate"
    for value in response.headers.get_all(name):
        challenge = parse_challenge_untrusted(value)
        if challenge is not None:
            return challenge
    return None


def authorize(
    request: Request,
    response: Response,
    *,
    username: str,
    password: str,
    cnonce: str,
) -> Request | None:
    """``request`` with Authorization (401) or Proxy-Authorization (407) credentials answering
    ``response``'s challenge (RFC 3261 §22.2, §22.3), or None when it holds none we can answer.

    The caller gives the request its new CSeq and branch (RFC 3261 §22.2: a new transaction);
    this adds only the credentials. ``nc`` is 1: each challenge is answered once."""
    challenge = usable_challenge(response)
    if challenge is None:
        return None
    uri = str(request.uri)
    ha1 = compute_ha1(challenge.algorithm, username, challenge.realm, password)
    nc = "00000001"
    qop = "auth" if challenge.qop_auth else None
    digest = compute_response(
        challenge.algorithm,
        ha1,
        method=request.method,
        uri=uri,
        nonce=challenge.nonce,
        qop=qop,
        nc=nc if qop else None,
        cnonce=cnonce if qop else None,
    )
    value = (
        f"Digest username={quote(username)}, realm={quote(challenge.realm)}, "
        f"nonce={quote(challenge.nonce)}, uri={quote(uri)}, response={quote(digest)}, "
        f"algorithm={challenge.algorithm.value}"
    )
    if qop:
        value += f", qop={qop}, nc={nc}, cnonce={quote(cnonce)}"
    if challenge.opaque is not None:
        value += f", opaque={quote(challenge.opaque)}"
    header = "Proxy-Authorization" if response.status == 407 else "Authorization"
    return request.with_headers(request.headers.set(header, value))

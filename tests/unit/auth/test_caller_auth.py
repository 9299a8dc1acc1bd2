"""How a caller authenticated, as the call record keeps it (interfaces.CallerAuth): the registrar
says whether the account's device certificate bound the request beside its digest, and the
record's form never holds a secret (no HA1, password, nonce or digest response)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.auth.client import authorize
from gateway.core.auth.digest import Authenticated, AuthKind
from gateway.core.interfaces import CallerAuth
from gateway.core.registration import RegistrationService
from gateway.core.sip.message import Response
from gateway.core.store.interface import CertificateMatch
from gateway.core.store.sqlite import SqliteStore
from gateway.core.transport.flows import Flow, FlowKey, PeerCertificate
from tests.unit.sip.sip_builders import request

REALM = "voipgw.local"
PHONE = ("192.0.2.20", 5061)
CERTIFICATE = PeerCertificate(
    sha256_fingerprint="ab" * 32, subject="CN=0004f2aabbcc", issuer="CN=vendor", verified=False
)


async def _send(data: bytes) -> None:
    raise AssertionError("nothing is sent")


def _service(tmp_path: Path, *, bound: bool) -> RegistrationService:
    store = SqliteStore.open(tmp_path / "state")
    store.accounts_add("1000", "secret1000", REALM)
    if bound:
        store.accounts_set("1000", certificate_matches=[("fingerprint", "ab" * 32)])
        assert store.get_account("1000").certificate_matches == (  # type: ignore[union-attr]
            CertificateMatch("fingerprint", "ab" * 32),
        )
    return RegistrationService(
        store,
        realm=REALM,
        domains=frozenset({"127.0.0.1:5060"}),
        new_tag=lambda: "t",
        clock=lambda: 1000.0,
    )


@pytest.mark.parametrize("bound", [False, True])
def test_the_registrar_says_whether_a_device_certificate_bound_the_digest(
    tmp_path: Path, bound: bool
) -> None:
    service = _service(tmp_path, bound=bound)
    flow = Flow(
        FlowKey("tls", ("127.0.0.1", 5061), PHONE),
        _send,
        reliable=True,
        secure=True,
        peer_certificate=CERTIFICATE,
    )
    invite = request("INVITE", uri="sip:+15551234@127.0.0.1:5060", sent_by="192.0.2.20:5061")
    challenge = service.authenticate(invite, flow, AuthKind.PROXY)
    assert isinstance(challenge, Response) and challenge.status == 407
    answered = authorize(invite, challenge, username="1000", password="secret1000", cnonce="c1")
    assert answered is not None
    outcome = service.authenticate(answered, flow, AuthKind.PROXY)
    assert isinstance(outcome, Authenticated) and outcome.username == "1000"
    assert outcome.device_certificate is bound


def test_the_record_of_a_digest_caller_names_realm_algorithm_and_qop_only() -> None:
    auth = CallerAuth(
        "digest", realm=REALM, algorithm="SHA-256", qop="auth", device_certificate=True
    )
    assert auth.record() == {
        "method": "digest",
        "realm": REALM,
        "algorithm": "SHA-256",
        "qop": "auth",
        "device_certificate": True,
    }


def test_the_record_of_a_trunk_accepted_by_source_names_the_address() -> None:
    assert CallerAuth("source", source="192.0.2.10").record() == {
        "method": "source",
        "source": "192.0.2.10",
    }

"""What STIR/SHAKEN costs a call: the ``stir_shaken`` plugin's signing and verification.

Run from the repository root (a few seconds)::

    python benchmarks/stir_shaken.py
    python benchmarks/stir_shaken.py --rounds 2000

Figures, microseconds of CPU per operation (median of ``--rounds`` timed runs of each):

- **sign**: ``StirShaken.sign`` for one account's call to a signing trunk: attestation,
  canonical JSON, base64url, one ES256 signature (``cryptography``, OpenSSL), the header;
- **verify, signer cached**: parsing an Identity header from the network, the claims checks
  and the PASSporT's signature, as a trunk's call does once its signer's checked key is cached;
  its parts: **parse + claims**, **signature**;
- **chain to the anchor**: what the first call with a new x5u URL adds (after its fetch): the
  chain checked to the trust anchor (two ECDSA verifications of certificates);
- **CRL look-up, cached**: what ``check_revocation`` adds to each call once the CRL is cached:
  the CRL's signature judged for the chain and each certificate of it checked to be covered
  (RFC 5280 §6.3.3) and looked up, for the STI-PA's CRL (a trust anchor signed it: judged once,
  at its fetch) and for a CRL the chain's intermediate signed (its verdict kept with the CRL for
  that chain's CA certificate since session 40: an ECDSA verification at every call before).

A call through a trunk without STIR/SHAKEN pays none of this (the core asks no service while
none is registered); the first call with a new x5u URL also waits for its fetch (network,
bounded by ``fetch_timeout``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway.core.config import structure
from gateway.core.interfaces import TrunkCall
from gateway.plugins.stir_shaken import StirShaken, StirShakenConfig
from gateway.plugins.stir_shaken.certificates import (
    RevocationList,
    SignerCertificate,
    load_pem_untrusted,
    load_trust_anchors,
    read_crl_untrusted,
    validate_chain,
)
from gateway.plugins.stir_shaken.passport import (
    check_claims,
    parse_identity_untrusted,
    verify_signature,
)
from gateway.testing.sti_pki import make_identity, make_pki

X5U = "https://certs.example.net/shaken.pem"
CRL_URL = "https://crl.sti-pa.example/crl"


def median_us(operation: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.process_time_ns()
        operation()
        times.append(time.process_time_ns() - start)
    return statistics.median(times) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=500)
    rounds = parser.parse_args().rounds
    pki = make_pki(crl_url=CRL_URL)
    with tempfile.TemporaryDirectory() as directory:
        anchors_path, key_path, _ = pki.write(Path(directory))
        config = structure(
            StirShakenConfig,
            {"sign_trunks": ["carrier"], "certificate_url": X5U, "private_key": str(key_path)},
            file="bench.toml",
            table_name="plugins.stir_shaken",
        )
        service = StirShaken(config)
        anchors = load_trust_anchors(anchors_path.read_bytes())
    now = time.time()
    call = TrunkCall(
        call_id="bench@example",
        trunk="carrier",
        caller_kind="account",
        caller_name="alice",
        calling=("+12025550123",),
        called="+12025550199",
        own_number=True,
        at=now,
    )
    value = make_identity(pki.signer_key, X5U, orig="12025550123", dest="12025550199", iat=int(now))
    chain = load_pem_untrusted(pki.chain_pem())
    passport = parse_identity_untrusted(value)

    def parse_and_check() -> None:
        checked = parse_identity_untrusted(value)
        check_claims(checked, calling=call.calling, called=call.called, now=now)

    def chain_to_anchor() -> None:
        validate_chain(chain, anchors, now=now)

    def signature() -> None:
        verify_signature(passport, pki.signer_key.public_key())

    signer = validate_chain(chain, anchors, now=now)
    sti_pa_crl = read_crl_untrusted(pki.crl(), anchors, now=now)
    intermediate_crl = read_crl_untrusted(pki.crl(signer="intermediate"), anchors, now=now)

    def crl_look_up(crl: RevocationList, signer: SignerCertificate) -> None:
        # StirShaken.revocation's work for a cached CRL: judged for the chain, then for each
        # certificate (one it does not cover is "revocation not checked"), then looked up.
        StirShaken._signed_for(crl, signer)
        for check in signer.revocation:
            if crl.issued_for(check):
                crl.lists(check)

    def verify_cached() -> None:
        # What a call pays once the signer's checked key is cached (StirShaken.signer; with
        # check_revocation, its CRL cached too: two dict look-ups more).
        parse_and_check()
        verify_signature(passport, pki.signer_key.public_key())

    figures = [
        ("sign (one ES256 signature and the header)", lambda: service.sign(call)),
        ("verify, signer cached (parse, claims, signature)", verify_cached),
        ("  parse + claims", parse_and_check),
        ("  PASSporT signature", signature),
        ("verify, first call with an x5u: + chain to the anchor", chain_to_anchor),
        ("CRL look-up, cached: the STI-PA's CRL", lambda: crl_look_up(sti_pa_crl, signer)),
        (
            "CRL look-up, cached: an intermediate's CRL",
            lambda: crl_look_up(intermediate_crl, signer),
        ),
    ]
    print(f"stir_shaken, median of {rounds} rounds, µs of CPU per operation")
    for name, operation in figures:
        print(f"  {name:55} {median_us(operation, rounds):8.1f}")


if __name__ == "__main__":
    main()

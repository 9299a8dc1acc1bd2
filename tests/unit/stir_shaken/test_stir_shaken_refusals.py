"""What a trunk's call the plugin verified gets, sans-IO: ``missing_identity`` (RFC 8224
§6.2.2: 428 Use Identity Header from a verifier that requires an Identity), independent of
``on_failure``; an emergency call refused by neither; a signer's certificate that names no CRL
(or a CRL that cannot be had) as ``revocation_unavailable`` says."""

from __future__ import annotations

import pytest

from gateway.core.config import ConfigError, structure
from gateway.plugins.stir_shaken import StirShaken, StirShakenConfig
from gateway.plugins.stir_shaken.passport import PassportError


def service(**table: object) -> StirShaken:
    return StirShaken(
        structure(StirShakenConfig, table, file="gw.toml", table_name="plugins.stir_shaken")
    )


def test_missing_identity_is_mark_by_default_and_checked() -> None:
    assert StirShakenConfig().missing_identity == "mark"
    with pytest.raises(ConfigError) as caught:
        service(missing_identity="refuse")
    assert str(caught.value).startswith("gw.toml: [plugins.stir_shaken]")
    assert "missing_identity" in str(caught.value)


@pytest.mark.parametrize("outcome", ["no_identity", "unsupported"])
def test_mark_lets_a_call_without_identity_go_on_as_no_tn_validation(outcome: str) -> None:
    # on_failure = "reject" does not imply refusing calls without an Identity.
    verdict = service(on_failure="reject").not_validated(outcome, "no Identity", emergency=False)
    assert verdict.outcome == outcome
    assert verdict.reject is None
    assert verdict.caller_parameters == (("verstat", "No-TN-Validation"),)
    assert verdict.described == "caller number not verified (no Identity)"


@pytest.mark.parametrize("outcome", ["no_identity", "unsupported"])
def test_reject_refuses_a_call_without_identity_with_428(outcome: str) -> None:
    verdict = service(missing_identity="reject").not_validated(
        outcome, "no Identity", emergency=False
    )
    assert verdict.reject == (428, "Use Identity Header")
    assert verdict.outcome == "no_identity_refused"
    assert verdict.described == "call refused: no Identity to verify (no Identity)"


def test_reject_never_refuses_an_emergency_call() -> None:
    verdict = service(missing_identity="reject").not_validated(
        "no_identity", "no Identity", emergency=True
    )
    assert verdict.reject is None
    assert verdict.outcome == "no_identity"
    assert verdict.caller_parameters == (("verstat", "No-TN-Validation"),)
    assert "an emergency call is not refused" in verdict.described


def test_missing_identity_reject_does_not_imply_on_failure_reject() -> None:
    plugin = service(missing_identity="reject")
    failed = plugin.outcome("bad_signature", "caller number verification failed", 438)
    assert failed.reject is None
    assert failed.caller_parameters == (("verstat", "TN-Validation-Failed"),)


def test_on_failure_reject_refuses_a_failure_but_not_an_emergency_call() -> None:
    plugin = service(on_failure="reject")
    failed = plugin.outcome("bad_signature", "verification failed", 438)
    assert failed.reject == (438, "Invalid Identity Header")
    emergency = plugin.outcome("bad_signature", "verification failed", 438, emergency=True)
    assert emergency.reject is None
    assert emergency.outcome == "bad_signature"
    assert emergency.caller_parameters == (("verstat", "TN-Validation-Failed"),)
    assert emergency.described == "verification failed; an emergency call is not refused"


def test_a_revocation_that_cannot_be_looked_up_passes_marked_or_fails_with_436() -> None:
    why = "certificate names no CRL (no CRL Distribution Points)"
    assert service().revocation_unknown(why) == f"revocation not checked: {why}"
    with pytest.raises(PassportError) as caught:
        service(revocation_unavailable="fail").revocation_unknown(why)
    assert (caught.value.outcome, caught.value.status) == ("revocation_unknown", 436)
    assert caught.value.reason == f"revocation not checked: {why}"

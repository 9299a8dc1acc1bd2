"""A call trunk -> alice through a gateway that records it to a sipp SRS: the set-up of the
SIPREC interop tests whose SRS is a sipp scenario (test_siprec_restart.py, test_siprec_retry.py,
test_siprec_srs_moving_sipp.py, test_siprec_timer.py). The trunk and alice are sipp too (the
``pbx`` trunk of tests/interop/sipp_calls.py, recorded by ``[plugins.siprec] trunks``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.interop.harness import LOOPBACK, GatewayProcess, SippUas
from tests.interop.sipp_calls import ACCOUNTS, inbound_trunk, register, trunk_call


@contextmanager
def recording_gateway(
    tmp_path: Path, srs: SippUas, siprec_keys: str = "", allowed_warnings: Sequence[str] = ()
) -> Iterator[GatewayProcess]:
    """A gateway in ``tmp_path/gw`` recording the trunk's calls to ``srs``; ``siprec_keys``:
    more lines of its ``[plugins.siprec]`` table; ``allowed_warnings`` as GatewayProcess's."""
    extra = inbound_trunk() + (
        "[plugins.siprec]\n"
        f'srs = "sip:srs@{srs.address}"\n'
        'trunks = ["pbx"]\n'
        f'media_address = "{LOOPBACK}"\n'
        f"{siprec_keys}"
    )
    with GatewayProcess(
        tmp_path / "gw",
        accounts=ACCOUNTS,
        settings={"plugins": {"enable": ["udp", "tcp", "siprec"]}},
        extra_toml=extra,
        allowed_warnings=allowed_warnings,
    ) as gw:
        yield gw


def recorded_call(
    gw: GatewayProcess, tmp_path: Path, *, alice: str, caller: str, call_duration_ms: int
) -> None:
    """alice (the sipp scenario ``alice``) registers, the trunk calls her (``caller``) for
    ``call_duration_ms``, and both pass their scenarios' checks."""
    phone = SippUas(alice, workdir=tmp_path / "alice")
    register(gw, tmp_path, "udp", phone.port)
    with phone:
        trunk_call(caller, gw, tmp_path, call_duration_ms=call_duration_ms).check()
        phone.wait(timeout=10).check()

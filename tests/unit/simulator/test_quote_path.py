"""The local stack's quote path: a simulated guest's GET_QUOTE_REQ through the launcher's
own relay to a test QGS; the relay keeps the quote, bound to the guest's REPORTDATA."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from cocoon_operator.attestation import parse_tdx_quote
from cocoon_operator.attestation.testing.pki import generate_test_pki
from cocoon_operator.attestation.testing.quotes import TdMeasurements
from cocoon_operator.simulator._quotepath import (
    SimulatedQgs,
    SimulatedQuotePath,
    report_measurements,
    td_report,
)


def test_a_tdreport_carries_the_measurements_and_reportdata_where_the_tdx_module_puts_them() -> (
    None
):
    m = TdMeasurements.from_label("release-a")
    report = td_report(m, b"\x05" * 64)
    assert len(report) == 1024 and report[128:192] == b"\x05" * 64
    assert report_measurements(report) == m


async def test_the_guests_quote_passes_the_relay_and_is_kept_with_its_reportdata(
    tmp_path: Path,
) -> None:
    pki = generate_test_pki(now=datetime(2026, 12, 6, tzinfo=UTC))
    qgs = await SimulatedQgs(pki, tmp_path / "qgs.sock").start()
    path = await SimulatedQuotePath(
        "cocoon-instance-0", tmp_path / "relay.qgs", qgs.address
    ).start()
    try:
        m = TdMeasurements.from_label("release-a")
        key_hash = hashlib.sha512(b"the guest's RA-TLS key").digest()
        quote = await path.ask(m, key_hash)
        parsed = parse_tdx_quote(quote)
        assert parsed.body.report_data == key_hash
        assert parsed.body.mrtd == m.mrtd and parsed.body.rtmr == m.rtmr
        captured = path.latest
        assert captured is not None and captured.quote == quote
        assert captured.report_data == key_hash
        assert path.relay.outcomes == {"relayed": 1}
    finally:
        await path.close()
        await qgs.close()

"""The ``attest`` CLI: one JSON object on stdout, exit 0 trusted / 1 rejected / 2 usage."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cocoon_operator.attestation import cli
from cocoon_operator.attestation.testing.ratls import build_ratls_certificate
from tests.unit.attestation.helpers import COCOON_MRTD, SAMPLE_MRTD, SAMPLE_RTMR

from .conftest import AT_OUTDATED

REPO = Path(__file__).resolve().parents[3]


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict[str, Any]]:
    status = cli.main(argv)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == 1, out
    return status, json.loads(lines[0])


def tdx_args(tdx: Path, quote: str, collateral: str | None, at: str) -> list[str]:
    args = ["tdx", "--quote", str(tdx / quote), "--root", str(tdx / "dcap-qvl/TrustedRootCA.der")]
    if collateral:
        args += ["--collateral", str(tdx / collateral)]
    return [*args, "--at", at]


def gpu_args(gpu: Path, *extra: str) -> list[str]:
    return [
        "gpu",
        "--report",
        str(gpu / "attestation-sdk/hopperAttestationReport.txt"),
        "--certs",
        str(gpu / "attestation-sdk/hopperCertChain.txt"),
        "--device-root",
        str(gpu / "nvtrust/verifier_device_root.pem"),
        "--at",
        "2025-01-01T00:00:00Z",
        *extra,
    ]


def test_tdx_trusted(capsys: pytest.CaptureFixture[str], tdx_dir: Path) -> None:
    status, out = run(
        capsys,
        tdx_args(
            tdx_dir,
            "dcap-qvl/tdx_quote",
            "dcap-qvl/tdx_quote_collateral.json",
            "2025-06-20T00:00:00Z",
        ),
    )
    assert status == 0
    assert out["verified"] is True
    assert out["error"] is None
    assert out["tcb_status"] == "UpToDate"
    assert out["mrtd"] == SAMPLE_MRTD
    assert out["rtmr"] == list(SAMPLE_RTMR)
    assert out["report_data"].startswith("9a9d48e7")
    assert out["fmspc"] == "B0C06F000000"
    assert len(out["image_hash"]) == 64
    assert out["quote_version"] == 4
    assert out["trusted_root"]["production"] is True
    assert out["engine"] == "dcap-qvl"


def test_tdx_expired(capsys: pytest.CaptureFixture[str], tdx_dir: Path) -> None:
    status, out = run(
        capsys,
        tdx_args(tdx_dir, "dcap-qvl/tdx_quote", "dcap-qvl/tdx_quote_collateral.json", "2025-08-01"),
    )
    assert (status, out["verified"], out["error"]) == (1, False, "collateral_expired")
    assert out["mrtd"] == SAMPLE_MRTD


def test_tdx_without_collateral_still_reports_fields(
    capsys: pytest.CaptureFixture[str], tdx_dir: Path
) -> None:
    status, out = run(capsys, tdx_args(tdx_dir, "cocoon/quote.dat", None, "2026-02-19"))
    assert (status, out["verified"], out["error"]) == (1, False, "collateral_missing")
    assert out["mrtd"] == COCOON_MRTD
    assert len(out["rtmr"]) == 4
    assert out["image_hash"] == "04b3afd931d28680af91a15b09d672c40ad6b141f7f9089a8d67d595220f7436"
    assert out["fmspc"] == "90C06F000000"
    assert out["trailing_bytes"] == 70


def test_tdx_v5_outdated_rejected(capsys: pytest.CaptureFixture[str], tdx_dir: Path) -> None:
    status, out = run(
        capsys,
        tdx_args(
            tdx_dir,
            "dcap-qvl/tdx_quote_outdated",
            "dcap-qvl/tdx_quote_outdated_collateral.json",
            "2026-02-19T00:00:00Z",
        ),
    )
    assert (status, out["error"], out["quote_version"], out["td_report"]) == (
        1,
        "tcb_level",
        5,
        "1.5",
    )


def test_tdx_policy_failure_names_the_rule(
    capsys: pytest.CaptureFixture[str], tdx_dir: Path
) -> None:
    argv = tdx_args(
        tdx_dir, "dcap-qvl/tdx_quote", "dcap-qvl/tdx_quote_collateral.json", "2025-06-20"
    )
    status, out = run(capsys, [*argv, "--allow-mrtd", "00" * 48])
    assert (status, out["error"], out["failed_rule"]) == (1, "policy.mrtd", "mrtd")
    assert out["tcb_status"] == "UpToDate"
    status, out = run(capsys, [*argv, "--nonce", "01" * 32])
    assert (status, out["error"]) == (1, "policy.report_data")
    status, out = run(capsys, [*argv, "--allow-mrtd", SAMPLE_MRTD, "--nonce", out["report_data"]])
    assert (status, out["verified"]) == (0, True)


def test_tdx_wrong_root(capsys: pytest.CaptureFixture[str], tdx_dir: Path, gpu_dir: Path) -> None:
    argv = tdx_args(
        tdx_dir, "dcap-qvl/tdx_quote", "dcap-qvl/tdx_quote_collateral.json", "2025-06-20"
    )
    argv[argv.index("--root") + 1] = str(gpu_dir / "nvtrust/verifier_device_root.pem")
    status, out = run(capsys, argv)
    assert (status, out["error"]) == (1, "trust_root")
    assert out["trusted_root"]["production"] is True  # an NVIDIA root, but not Intel's


def test_tdx_ratls_certificate_binding_checked(
    capsys: pytest.CaptureFixture[str], tdx_dir: Path, tmp_path: Path
) -> None:
    quote = (tdx_dir / "cocoon/quote.dat").read_bytes()
    cert = tmp_path / "ratls.pem"
    cert.write_bytes(
        build_ratls_certificate(
            quote, private_key=Ed25519PrivateKey.generate(), not_before=AT_OUTDATED
        )
    )
    status, out = run(
        capsys,
        [
            "tdx",
            "--ratls-cert",
            str(cert),
            "--collateral",
            str(tdx_dir / "dcap-qvl/tdx_quote_outdated_collateral.json"),
            "--root",
            str(tdx_dir / "dcap-qvl/TrustedRootCA.der"),
            "--at",
            "2026-02-19T01:00:00Z",
        ],
    )
    # A real quote inside a freshly made certificate is not bound to its key.
    assert (status, out["error"]) == (1, "report_data")
    assert out["mrtd"] == COCOON_MRTD


def test_gpu_trusted_with_rim(capsys: pytest.CaptureFixture[str], gpu_dir: Path) -> None:
    nonce = "27a328247bf7935c993341cf587be6f05986ccce4fe7ba2c54100bd616a58f66"
    status, out = run(
        capsys,
        gpu_args(
            gpu_dir,
            "--rim",
            str(gpu_dir / "nvtrust/1010_0200_882_96005E0001_PROD.swidtag"),
            "--rim-root",
            str(gpu_dir / "nvtrust/verifier_RIM_root.pem"),
            "--nonce",
            nonce,
        ),
    )
    assert status == 0
    assert out["verified"] is True
    assert out["error"] is None
    assert out["driver_version"] == "535.86.09"
    assert out["vbios_version"] == "96.00.5E.00.01"
    assert out["nonce"] == nonce
    assert out["measurements_checked"] == 12
    assert out["mismatches"] == []
    assert out["revocation"] == "not_checked"
    assert out["measurement_blocks"] == 64


def test_gpu_measurement_mismatch(capsys: pytest.CaptureFixture[str], gpu_dir: Path) -> None:
    status, out = run(
        capsys,
        gpu_args(
            gpu_dir,
            "--rim",
            str(gpu_dir / "attestation-sdk/vbios_rim_measurement_mismatch.xml"),
            "--rim-root",
            str(gpu_dir / "nvtrust/verifier_RIM_root.pem"),
        ),
    )
    assert (status, out["verified"], out["error"]) == (1, False, "measurement_mismatch")
    assert out["measurements_checked"] == 12
    assert [m["index"] for m in out["mismatches"]] == [10]


def test_gpu_invalid_signature_and_wrong_nonce(
    capsys: pytest.CaptureFixture[str], gpu_dir: Path
) -> None:
    argv = gpu_args(gpu_dir)
    argv[argv.index("--report") + 1] = str(
        gpu_dir / "attestation-sdk/hopperAttestationReportInvalidSignature.txt"
    )
    status, out = run(capsys, argv)
    assert (status, out["error"]) == (1, "evidence_signature")
    status, out = run(capsys, gpu_args(gpu_dir, "--nonce", "00" * 32))
    assert (status, out["error"]) == (1, "nonce_mismatch")


def test_gpu_rim_needs_rim_root(capsys: pytest.CaptureFixture[str], gpu_dir: Path) -> None:
    status, out = run(capsys, gpu_args(gpu_dir, "--rim", str(gpu_dir / "nvtrust/x.swidtag")))
    assert (status, out["error"]) == (2, "usage")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["tdx"],
        ["tdx", "--quote", "q", "--ratls-cert", "c", "--root", "r"],
        ["gpu", "--report", "r"],
        ["frobnicate"],
    ],
)
def test_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    status, out = run(capsys, argv)
    assert (status, out["verified"], out["error"]) == (2, False, "usage")


def test_unreadable_file_and_bad_instant(capsys: pytest.CaptureFixture[str], tdx_dir: Path) -> None:
    status, out = run(capsys, tdx_args(tdx_dir, "missing.dat", None, "2025-06-20"))
    assert (status, out["error"]) == (2, "usage")
    assert "missing.dat" in out["detail"]
    status, out = run(capsys, tdx_args(tdx_dir, "cocoon/quote.dat", None, "yesterday"))
    assert (status, out["error"]) == (2, "usage")


def test_add_subparsers_wires_into_a_host_parser(
    capsys: pytest.CaptureFixture[str], tdx_dir: Path
) -> None:
    host = argparse.ArgumentParser(prog="cocoon-operator")
    sub = host.add_subparsers(dest="command", required=True)
    cli.add_subparsers(sub)
    args = host.parse_args(
        [
            "attest",
            *tdx_args(
                tdx_dir,
                "dcap-qvl/tdx_quote",
                "dcap-qvl/tdx_quote_collateral.json",
                "2025-06-20T00:00:00+00:00",
            ),
        ]
    )
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["verified"] is True


def test_module_entry_point_in_a_subprocess(gpu_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cocoon_operator.attestation", *gpu_args(gpu_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["verified"] is True
    assert out["driver_version"] == "535.86.09"

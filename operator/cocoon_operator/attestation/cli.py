"""``attest`` subcommands: verify evidence files offline and print one JSON object.

Exit status: 0 trusted, 1 rejected, 2 usage error (bad arguments, unreadable file).

Wiring: ``add_subparsers(subparsers)`` adds ``attest {tdx,gpu}`` to an existing
argparse sub-parser set (each sets ``func`` to a callable taking the Namespace
and returning the exit status); ``main(argv)`` is a standalone entry point, also
behind ``python -m cocoon_operator.attestation``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from cryptography import x509

from cocoon_operator.attestation._collateral import Collateral
from cocoon_operator.attestation._gpu import GpuVerifier
from cocoon_operator.attestation._policy import (
    KeyBinding,
    NonceBinding,
    ReportDataBinding,
    TdxPolicy,
    evaluate_tdx_policy,
    hex_set,
)
from cocoon_operator.attestation._quote import TdxQuote, parse_tdx_quote, pck_identity
from cocoon_operator.attestation._ratls import check_ratls_binding, parse_ratls_certificate
from cocoon_operator.attestation._revocation import NoRevocationCheck
from cocoon_operator.attestation._roots import TrustedRoot
from cocoon_operator.attestation._spdm import parse_hex_evidence, parse_spdm_measurements
from cocoon_operator.attestation._tdx import TdxVerifier
from cocoon_operator.attestation._time import parse_instant
from cocoon_operator.attestation.errors import AttestationError, MeasurementMismatchError

EXIT_TRUSTED = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad arguments or unreadable inputs: exit status 2."""


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, sort_keys=True) + "\n")
    sys.stdout.flush()


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path!r}: {exc.strerror or exc}") from exc


def _hex(value: str, what: str) -> bytes:
    try:
        return bytes.fromhex(value.strip().lower().removeprefix("0x"))
    except ValueError as exc:
        raise UsageError(f"{what} is not hex: {value!r}") from exc


def _instant(text: str | None) -> datetime:
    """``--at``; without it the CLI (an I/O edge) reads the clock once, here."""
    if text is None:
        return datetime.now(UTC)
    try:
        return parse_instant(text)
    except ValueError as exc:
        raise UsageError(f"--at is not an ISO 8601 instant: {text!r}") from exc


def _root(path: str, what: str) -> TrustedRoot:
    try:
        return TrustedRoot.load(_read(path, what), label=path)
    except AttestationError as exc:
        raise UsageError(f"{what} {path!r}: {exc}") from exc


def _error(exc: AttestationError) -> tuple[str, str]:
    return exc.code, str(exc)


# --------------------------------------------------------------------------- tdx


def _quote_fields(quote: TdxQuote | None) -> dict[str, Any]:
    if quote is None:
        return {
            "quote_version": None,
            "td_report": None,
            "mrtd": None,
            "mrconfigid": None,
            "mrowner": None,
            "mrownerconfig": None,
            "rtmr": None,
            "report_data": None,
            "image_hash": None,
            "trailing_bytes": None,
            "fmspc": None,
            "ca": None,
        }
    body = quote.body
    fmspc = ca = None
    try:
        leaf = x509.load_pem_x509_certificates(quote.pck_chain_pem)[0]
        ident = pck_identity(leaf)
        fmspc, ca = ident.fmspc, ident.ca
    except (AttestationError, ValueError, IndexError):
        pass
    return {
        "quote_version": quote.version,
        "td_report": "1.5" if body.mrservicetd is not None else "1.0",
        "mrtd": body.mrtd.hex(),
        "mrconfigid": body.mrconfigid.hex(),
        "mrowner": body.mrowner.hex(),
        "mrownerconfig": body.mrownerconfig.hex(),
        "rtmr": [r.hex() for r in body.rtmr],
        "report_data": body.report_data.hex(),
        "image_hash": quote.image_hash.hex(),
        "trailing_bytes": quote.trailing_bytes,
        "fmspc": fmspc,
        "ca": ca,
    }


def _tdx_policy(args: argparse.Namespace, has_binding: bool) -> TdxPolicy:
    try:
        return TdxPolicy(
            accepted_tcb_statuses=frozenset(args.accept_tcb or ["UpToDate"]),
            allowed_mrtd=hex_set(args.allow_mrtd) if args.allow_mrtd else None,
            allowed_image_hashes=hex_set(args.allow_image_hash) if args.allow_image_hash else None,
            allowed_model_hashes=hex_set(args.allow_model_hash) if args.allow_model_hash else None,
            require_report_data_binding=has_binding,
            require_production_root=not args.test_root,
        )
    except ValueError as exc:
        raise UsageError(f"allow-list value is not hex: {exc}") from exc


def cmd_attest_tdx(args: argparse.Namespace) -> int:
    """Verify a TDX quote (or an RA-TLS certificate carrying one) against collateral."""
    payload: dict[str, Any] = {"kind": "tdx"}
    try:
        status = _attest_tdx(args, payload)
    except UsageError as exc:
        payload.update(verified=False, error="usage", detail=str(exc))
        status = EXIT_USAGE
    _emit(payload)
    return status


def _attest_tdx(args: argparse.Namespace, payload: dict[str, Any]) -> int:
    now = _instant(args.at)
    root = _root(args.root, "--root")
    binding: ReportDataBinding | None = None
    if args.report_data_key:
        binding = KeyBinding(_hex(args.report_data_key, "--report-data-key"))
    elif args.nonce:
        binding = NonceBinding(_hex(args.nonce, "--nonce"))
    collateral_bytes = _read(args.collateral, "--collateral") if args.collateral else None
    source = _read(args.quote or args.ratls_cert, "--quote" if args.quote else "--ratls-cert")
    policy = _tdx_policy(args, has_binding=binding is not None or bool(args.ratls_cert))
    payload.update(
        verified=False,
        error=None,
        detail=None,
        failed_rule=None,
        at=now.isoformat(),
        tcb_status=None,
        qe_tcb_status=None,
        platform_tcb_status=None,
        advisory_ids=[],
        collateral_expires_at=None,
        trusted_root={"sha256": root.fingerprint, "production": root.production},
        **_quote_fields(None),
    )
    quote: TdxQuote | None = None
    try:
        if args.ratls_cert:
            cert = parse_ratls_certificate(source)
            cert.check(now=now)
            quote = parse_tdx_quote(cert.quote)
            payload.update(_quote_fields(quote))
            check_ratls_binding(cert, quote.body.report_data)
            binding = cert.binding
            payload["ratls_public_key"] = cert.public_key.hex()
        else:
            quote = parse_tdx_quote(source)
            payload.update(_quote_fields(quote))
        collateral = Collateral.from_json(collateral_bytes) if collateral_bytes else None
        verifier = TdxVerifier(root)
        payload["engine"] = verifier.engine.name
        verified = verifier.verify(quote, collateral, now=now)
    except AttestationError as exc:
        payload["error"], payload["detail"] = _error(exc)
        return EXIT_REJECTED
    payload.update(
        tcb_status=verified.tcb_status,
        qe_tcb_status=verified.qe_tcb_status,
        platform_tcb_status=verified.platform_tcb_status,
        advisory_ids=list(verified.advisory_ids),
        collateral_expires_at=verified.collateral_expires_at.isoformat(),
        fmspc=verified.fmspc,
        ca=verified.pck.ca,
    )
    verdict = evaluate_tdx_policy(verified, policy, binding=binding, model=args.model)
    if not verdict.trusted:
        rule = verdict.failed_rule.value if verdict.failed_rule else "unknown"
        payload.update(error=f"policy.{rule}", detail=verdict.reason, failed_rule=rule)
        return EXIT_REJECTED
    payload["verified"] = True
    return EXIT_TRUSTED


# --------------------------------------------------------------------------- gpu


def cmd_attest_gpu(args: argparse.Namespace) -> int:
    """Verify an H100 SPDM attestation report, its device chain and optional RIMs."""
    payload: dict[str, Any] = {"kind": "gpu"}
    try:
        status = _attest_gpu(args, payload)
    except UsageError as exc:
        payload.update(verified=False, error="usage", detail=str(exc))
        status = EXIT_USAGE
    _emit(payload)
    return status


def _attest_gpu(args: argparse.Namespace, payload: dict[str, Any]) -> int:
    now = _instant(args.at)
    device_root = _root(args.device_root, "--device-root")
    rims = [_read(p, "--rim") for p in args.rim or []]
    if rims and not args.rim_root:
        raise UsageError("--rim needs --rim-root")
    rim_root = _root(args.rim_root, "--rim-root") if args.rim_root else None
    expected = _hex(args.nonce, "--nonce") if args.nonce else None
    report_text = _read(args.report, "--report")
    chain = _read(args.certs, "--certs")
    revocation = NoRevocationCheck()
    payload.update(
        verified=False,
        error=None,
        detail=None,
        at=now.isoformat(),
        nonce=None,
        expected_nonce=expected.hex() if expected is not None else None,
        driver_version=None,
        vbios_version=None,
        fwid=None,
        measurement_blocks=None,
        measurements_checked=0,
        mismatches=[],
        rims=[],
        revocation=revocation.check([], now=now).status.value,
        device_root={"sha256": device_root.fingerprint, "production": device_root.production},
    )
    try:
        evidence = parse_hex_evidence(report_text)
        parsed = parse_spdm_measurements(evidence)
        fwid = parsed.opaque.fwid
        payload.update(
            nonce=parsed.requester_nonce.hex(),
            driver_version=parsed.opaque.driver_version,
            vbios_version=parsed.opaque.vbios_version,
            fwid=fwid.hex() if fwid else None,
            measurement_blocks=len(parsed.blocks),
        )
        verifier = GpuVerifier(device_root, revocation=revocation, rim_root=rim_root)
        verified_rims = [verifier.verify_rim(r, now=now) for r in rims]
        payload["rims"] = [
            {"id": r.rim_id, "version": r.version, "signer": r.signer} for r in verified_rims
        ]
        result = verifier.verify(
            evidence, chain, now=now, expected_nonce=expected, rims=verified_rims
        )
    except MeasurementMismatchError as exc:
        payload["error"], payload["detail"] = _error(exc)
        payload["measurements_checked"] = exc.checked
        payload["mismatches"] = [
            {
                "index": m.index,
                "rim_index": m.rim_index,
                "rim_id": m.rim_id,
                "expected": list(m.expected),
                "actual": m.actual,
            }
            for m in exc.mismatches
        ]
        return EXIT_REJECTED
    except AttestationError as exc:
        payload["error"], payload["detail"] = _error(exc)
        return EXIT_REJECTED
    payload.update(verified=True, measurements_checked=result.measurements_checked)
    return EXIT_TRUSTED


# --------------------------------------------------------------------------- wiring


def _add_tdx(sub: Any) -> None:
    p = sub.add_parser("tdx", help="verify a TDX DCAP quote (v4/v5) offline")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--quote", help="raw quote file")
    src.add_argument("--ratls-cert", help="RA-TLS certificate (PEM/DER) carrying the quote")
    p.add_argument("--collateral", help="collateral JSON (dcap-qvl keys); omitted = rejected")
    p.add_argument("--root", required=True, help="pinned Intel SGX Root CA (DER or PEM)")
    p.add_argument("--at", help="verification instant, ISO 8601 (default: now)")
    p.add_argument("--accept-tcb", action="append", metavar="STATUS", help="default UpToDate")
    p.add_argument(
        "--allow-mrtd",
        action="append",
        metavar="HEX",
        help="an accepted MRTD (repeatable; default: any)",
    )
    p.add_argument(
        "--allow-image-hash",
        action="append",
        metavar="HEX",
        help="an accepted image hash (repeatable; default: any)",
    )
    p.add_argument(
        "--allow-model-hash",
        action="append",
        metavar="HEX",
        help="an accepted model hash (repeatable; default: any)",
    )
    p.add_argument("--model", help="Name@commit:verity (checked against --allow-model-hash)")
    bind = p.add_mutually_exclusive_group()
    bind.add_argument("--report-data-key", metavar="HEX", help="Ed25519 key REPORTDATA binds")
    bind.add_argument("--nonce", metavar="HEX", help="nonce REPORTDATA must hold")
    p.add_argument(
        "--test-root",
        action="store_true",
        help="accept a root other than Intel's (test PKI only)",
    )
    p.set_defaults(func=cmd_attest_tdx)


def _add_gpu(sub: Any) -> None:
    p = sub.add_parser("gpu", help="verify an NVIDIA H100 SPDM attestation report offline")
    p.add_argument("--report", required=True, help="hex text of request+response")
    p.add_argument("--certs", required=True, help="device certificate chain (PEM, leaf first)")
    p.add_argument("--device-root", required=True, help="pinned NVIDIA device identity root")
    p.add_argument("--rim", action="append", help="RIM (SWID XML); repeatable")
    p.add_argument("--rim-root", help="pinned NVIDIA RIM signing root")
    p.add_argument("--nonce", metavar="HEX", help="expected requester nonce")
    p.add_argument("--at", help="verification instant, ISO 8601 (default: now)")
    p.set_defaults(func=cmd_attest_gpu)


def add_subparsers(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``attest {tdx,gpu}`` to an ``add_subparsers()`` result; returns the attest parser."""
    attest: argparse.ArgumentParser = subparsers.add_parser(
        "attest", help="verify attestation evidence offline (one JSON object on stdout)"
    )
    sub = attest.add_subparsers(dest="attest_kind", required=True)
    _add_tdx(sub)
    _add_gpu(sub)
    return attest


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cocoon-operator attest",
        description="Verify TDX quotes and NVIDIA GPU evidence offline.",
    )
    sub = parser.add_subparsers(dest="attest_kind", required=True, parser_class=_Parser)
    _add_tdx(sub)
    _add_gpu(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``main(["tdx", "--quote", ...])``."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        sys.stderr.write(parser.format_usage())
        _emit({"verified": False, "error": "usage", "detail": str(exc)})
        return EXIT_USAGE
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


def run() -> None:
    sys.exit(main())

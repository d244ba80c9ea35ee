"""Trust roots: the pinned certificates every chain must end at.

Production code trusts only Intel's and NVIDIA's published roots, which are
embedded here (public certificates, identified by their SHA-256 fingerprints).
A test PKI is used only when a caller builds a :class:`TrustedRoot` from its own
certificate explicitly; :attr:`TrustedRoot.production` then reports ``False``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from cocoon_operator.attestation.errors import CertificateFormatError

#: Intel SGX Root CA (signs the PCK, TCB-signing and CRL chains of DCAP).
INTEL_SGX_ROOT_CA_PEM = b"""-----BEGIN CERTIFICATE-----
MIICjzCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIw
aDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENv
cnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJ
BgNVBAYTAlVTMB4XDTE4MDUyMTEwNDUxMFoXDTQ5MTIzMTIzNTk1OVowaDEaMBgG
A1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0
aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYT
AlVTMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPWsCzaEKi7
1OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxFP2sJBK5zlKOB
uzCBuDAfBgNVHSMEGDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJ
MEegRaBDhkFodHRwczovL2NlcnRpZmljYXRlcy50cnVzdGVkc2VydmljZXMuaW50
ZWwuY29tL0ludGVsU0dYUm9vdENBLmRlcjAdBgNVHQ4EFgQUImUM1lqdNInzg7SV
Ur9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYI
KoZIzj0EAwIDSQAwRgIhAOW/5QkR+S9CiSDcNoowLuPRLsWGf/Yi7GSX94BgwTwg
AiEA4J0lrHoMs+Xo5o/sX6O9QWxHRAvZUGOdRQ7cvqRXaqI=
-----END CERTIFICATE-----
"""
INTEL_SGX_ROOT_CA_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"

#: NVIDIA Device Identity CA (root of every GPU's attestation certificate chain).
NVIDIA_DEVICE_ROOT_PEM = b"""-----BEGIN CERTIFICATE-----
MIICCzCCAZCgAwIBAgIQLTZwscoQBBHB/sDoKgZbVDAKBggqhkjOPQQDAzA1MSIw
IAYDVQQDDBlOVklESUEgRGV2aWNlIElkZW50aXR5IENBMQ8wDQYDVQQKDAZOVklE
SUEwIBcNMjExMTA1MDAwMDAwWhgPOTk5OTEyMzEyMzU5NTlaMDUxIjAgBgNVBAMM
GU5WSURJQSBEZXZpY2UgSWRlbnRpdHkgQ0ExDzANBgNVBAoMBk5WSURJQTB2MBAG
ByqGSM49AgEGBSuBBAAiA2IABA5MFKM7+KViZljbQSlgfky/RRnEQScW9NDZF8SX
gAW96r6u/Ve8ZggtcYpPi2BS4VFu6KfEIrhN6FcHG7WP05W+oM+hxj7nyA1r1jkB
2Ry70YfThX3Ba1zOryOP+MJ9vaNjMGEwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8B
Af8EBAMCAQYwHQYDVR0OBBYEFFeF/4PyY8xlfWi3Olv0jUrL+0lfMB8GA1UdIwQY
MBaAFFeF/4PyY8xlfWi3Olv0jUrL+0lfMAoGCCqGSM49BAMDA2kAMGYCMQCPeFM3
TASsKQVaT+8S0sO9u97PVGCpE9d/I42IT7k3UUOLSR/qvJynVOD1vQKVXf0CMQC+
EY55WYoDBvs2wPAH1Gw4LbcwUN8QCff8bFmV4ZxjCRr4WXTLFHBKjbfneGSBWwA=
-----END CERTIFICATE-----
"""
NVIDIA_DEVICE_ROOT_SHA256 = "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48"

#: NVIDIA CoRIM signing Root CA (root of the RIM signing chains).
NVIDIA_RIM_ROOT_PEM = b"""-----BEGIN CERTIFICATE-----
MIICKTCCAbCgAwIBAgIQRdrjoA5QN73fh1N17LXicDAKBggqhkjOPQQDAzBFMQsw
CQYDVQQGEwJVUzEPMA0GA1UECgwGTlZJRElBMSUwIwYDVQQDDBxOVklESUEgQ29S
SU0gc2lnbmluZyBSb290IENBMCAXDTIzMDMxNjE1MzczNFoYDzIwNTMwMzA4MTUz
NzM0WjBFMQswCQYDVQQGEwJVUzEPMA0GA1UECgwGTlZJRElBMSUwIwYDVQQDDBxO
VklESUEgQ29SSU0gc2lnbmluZyBSb290IENBMHYwEAYHKoZIzj0CAQYFK4EEACID
YgAEuECyi9vNM+Iw2lfUzyBldHAwaC1HF7TCgp12QcEyUTm3Tagxwr48d55+K2VI
lWYIDk7NlAIQdcV/Ff7euGLI+Qauj93HsSI4WX298PpW54RTgz9tC+Q684caR/BX
WEeZo2MwYTAdBgNVHQ4EFgQUpaXrOPK4ZDAk08DBskn594zeZjAwHwYDVR0jBBgw
FoAUpaXrOPK4ZDAk08DBskn594zeZjAwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8B
Af8EBAMCAQYwCgYIKoZIzj0EAwMDZwAwZAIwHGDyscDP6ihHqRvZlI3eqZ4YkvjE
1duaN84tAHRVgxVMvNrp5Tnom3idHYGW/dskAjATvjIx6VzHm/4e2GiZAyZEIUBD
OKPzp5ei/A0iUZpdvngenDwV8Qa/wGdiTmJ7Bp4=
-----END CERTIFICATE-----
"""
NVIDIA_RIM_ROOT_SHA256 = "12977b5115acb0381179279fffeb5a8c4d264971ebb32298023a465fa41df5d1"

_PRODUCTION_FINGERPRINTS = frozenset(
    {INTEL_SGX_ROOT_CA_SHA256, NVIDIA_DEVICE_ROOT_SHA256, NVIDIA_RIM_ROOT_SHA256}
)


def load_certificates(data: bytes) -> tuple[x509.Certificate, ...]:
    """Decode one DER certificate or any number of PEM certificates."""
    text = data.strip(b"\x00 \t\r\n")
    try:
        if text.startswith(b"-----BEGIN"):
            certs = tuple(x509.load_pem_x509_certificates(text))
        else:  # DER is binary: any byte may end it, so nothing is stripped
            certs = (x509.load_der_x509_certificate(data),)
    except ValueError as exc:
        raise CertificateFormatError(f"cannot decode certificate(s): {exc}") from exc
    if not certs:
        raise CertificateFormatError("no certificate found")
    return certs


@dataclass(frozen=True)
class TrustedRoot:
    """A pinned root certificate. Build one with :meth:`load` or the named constructors."""

    certificate: x509.Certificate
    label: str

    @cached_property
    def der(self) -> bytes:
        return self.certificate.public_bytes(Encoding.DER)

    @cached_property
    def fingerprint(self) -> str:
        """Lower-case hex SHA-256 of the DER certificate."""
        return hashlib.sha256(self.der).hexdigest()

    @property
    def production(self) -> bool:
        """True only for the embedded Intel / NVIDIA roots."""
        return self.fingerprint in _PRODUCTION_FINGERPRINTS

    @classmethod
    def load(cls, data: bytes, *, label: str = "explicit") -> TrustedRoot:
        """A root from DER or PEM bytes (exactly one certificate)."""
        certs = load_certificates(data)
        if len(certs) != 1:
            raise CertificateFormatError(f"a trust root is one certificate, got {len(certs)}")
        return cls(certificate=certs[0], label=label)


def intel_sgx_root_ca() -> TrustedRoot:
    """Intel SGX Root CA: the production root for TDX DCAP quotes."""
    return TrustedRoot.load(INTEL_SGX_ROOT_CA_PEM, label="Intel SGX Root CA")


def nvidia_device_root() -> TrustedRoot:
    """NVIDIA Device Identity CA: the production root for GPU attestation reports."""
    return TrustedRoot.load(NVIDIA_DEVICE_ROOT_PEM, label="NVIDIA Device Identity CA")


def nvidia_rim_root() -> TrustedRoot:
    """NVIDIA CoRIM signing Root CA: the production root for RIM signatures."""
    return TrustedRoot.load(NVIDIA_RIM_ROOT_PEM, label="NVIDIA CoRIM signing Root CA")

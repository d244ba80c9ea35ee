"""``s3://bucket/key`` sources: a GET signed with AWS Signature Version 4.

Prebuilt model images (``spec.model.source``) may sit in S3 or anything that
speaks its API (MinIO, Ceph RGW, R2). The request goes to the endpoint with
path-style addressing (``ENDPOINT/bucket/key``: it works for every bucket name
and every S3-compatible store), signed in the ``Authorization`` header as AWS
documents SigV4 (canonical request, string to sign, derived key), with
``x-amz-content-sha256`` set to the hash of the empty body, as S3 requires on a
GET. Without credentials the request is sent unsigned (a public bucket).

The integrity of what comes back does not rest on any of this: the pair is
checked against the spec's verity root hash before it is published
(:mod:`._ensure`). Credentials are read from files (a Secret mounted into the
init container), never logged: errors name the bucket and key only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import quote, urlsplit

EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()
DEFAULT_REGION: Final = "us-east-1"
ALGORITHM: Final = "AWS4-HMAC-SHA256"
# The files a mounted credentials Secret holds (keys of the Secret).
ACCESS_KEY_FILE: Final = "accessKeyId"
SECRET_KEY_FILE: Final = "secretAccessKey"  # noqa: S105 (a file name)
SESSION_TOKEN_FILE: Final = "sessionToken"  # noqa: S105 (a file name)


class S3SourceError(ValueError):
    """An ``s3://`` URL or its options that cannot make a request."""


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # never the secret, whatever prints it
        return f"Credentials(access_key={self.access_key!r}, secret_key=<redacted>)"

    @classmethod
    def from_dir(cls, directory: Path) -> Credentials:
        """From a mounted Secret: ``accessKeyId``, ``secretAccessKey``, ``sessionToken``
        (optional)."""

        def read(name: str) -> str | None:
            path = directory / name
            try:
                return path.read_text().strip() or None
            except FileNotFoundError:
                return None

        access, secret = read(ACCESS_KEY_FILE), read(SECRET_KEY_FILE)
        if access is None or secret is None:
            raise S3SourceError(
                f"S3 credentials in {directory}: {ACCESS_KEY_FILE} and {SECRET_KEY_FILE}"
                " are both needed"
            )
        return cls(access, secret, read(SESSION_TOKEN_FILE))


@dataclass(frozen=True)
class S3Options:
    """Where S3 is and who asks (the ``model ensure`` flags ``--s3-*``)."""

    endpoint: str | None = None  # default: https://s3.<region>.amazonaws.com
    region: str = DEFAULT_REGION
    credentials: Credentials | None = None

    def base(self) -> str:
        if self.endpoint:
            return self.endpoint.rstrip("/")
        return f"https://s3.{self.region}.amazonaws.com"


@dataclass(frozen=True)
class SignedGet:
    url: str
    headers: dict[str, str]


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` as (bucket, key); refused without either."""
    parts = urlsplit(url)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if parts.scheme.lower() != "s3" or not bucket or not key or parts.query or parts.fragment:
        raise S3SourceError(f"{url!r} is not s3://BUCKET/KEY")
    return bucket, key


def _uri_encode(path: str) -> str:
    # SigV4's URI encoding: unreserved characters kept, '/' kept in paths, the
    # rest percent-encoded in upper case (S3 encodes the path once).
    return quote(path, safe="/-_.~")


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """SigV4's derived key: HMAC chain over date, region, service and ``aws4_request``."""
    k = _hmac(f"AWS4{secret}".encode(), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def authorization(
    *,
    method: str,
    host: str,
    path: str,
    headers: dict[str, str],
    payload_hash: str,
    credentials: Credentials,
    region: str,
    service: str,
    amz_date: str,
) -> str:
    """The ``Authorization`` header for a request without a query string.

    ``headers`` are the ones signed besides ``host`` (lower-cased names), e.g.
    ``x-amz-date`` and ``x-amz-content-sha256``; ``path`` is already URI-encoded.
    """
    signed = {"host": host, **{k.lower(): v.strip() for k, v in headers.items()}}
    names = sorted(signed)
    canonical = "\n".join(
        [
            method,
            path,
            "",  # no query string
            "".join(f"{n}:{signed[n]}\n" for n in names),
            ";".join(names),
            payload_hash,
        ]
    )
    date = amz_date[:8]
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = signing_key(credentials.secret_key, date, region, service)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return (
        f"{ALGORITHM} Credential={credentials.access_key}/{scope},"
        f" SignedHeaders={';'.join(names)}, Signature={signature}"
    )


def signed_get(url: str, options: S3Options, now: dt.datetime) -> SignedGet:
    """The HTTPS GET for ``s3://bucket/key`` through ``options``' endpoint, signed when
    credentials are given (``now`` is UTC)."""
    bucket, key = split_s3_url(url)
    base = urlsplit(options.base())
    if base.scheme not in ("https", "http") or not base.netloc:
        raise S3SourceError(f"S3 endpoint {options.base()!r} is not an http(s) URL")
    path = _uri_encode(f"{base.path.rstrip('/')}/{bucket}/{key}")
    target = f"{base.scheme}://{base.netloc}{path}"
    headers = {"x-amz-content-sha256": EMPTY_SHA256}
    creds = options.credentials
    if creds is None:
        return SignedGet(target, headers)
    headers["x-amz-date"] = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    if creds.session_token:
        headers["x-amz-security-token"] = creds.session_token
    headers["Authorization"] = authorization(
        method="GET",
        host=base.netloc,
        path=path,
        headers=headers,
        payload_hash=EMPTY_SHA256,
        credentials=creds,
        region=options.region,
        service="s3",
        amz_date=headers["x-amz-date"],
    )
    return SignedGet(target, headers)

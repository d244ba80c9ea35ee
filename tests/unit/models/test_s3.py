"""SigV4 for ``s3://`` model sources: the signing against published and reference
vectors, path-style URLs, and what is never shown."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from cocoon_operator.models._s3 import (
    EMPTY_SHA256,
    Credentials,
    S3Options,
    S3SourceError,
    authorization,
    signed_get,
    split_s3_url,
)

EXAMPLE = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
NOON = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def test_the_signature_matches_aws_get_vanilla_test_vector() -> None:
    # AWS's SigV4 test suite, "get-vanilla": GET / on example.amazonaws.com,
    # service "service", us-east-1, 20150830T123600Z.
    header = authorization(
        method="GET",
        host="example.amazonaws.com",
        path="/",
        headers={"x-amz-date": "20150830T123600Z"},
        payload_hash=EMPTY_SHA256,
        credentials=EXAMPLE,
        region="us-east-1",
        service="service",
        amz_date="20150830T123600Z",
    )
    assert header == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request,"
        " SignedHeaders=host;x-amz-date,"
        " Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    )


@pytest.mark.parametrize(
    ("url", "credentials", "path", "signed_headers", "signature"),
    [
        # Computed with botocore 1.x's S3SigV4Auth for the same request and time.
        (
            "s3://my-bucket/models/Qwen+/a b.tar",
            EXAMPLE,
            "/my-bucket/models/Qwen%2B/a%20b.tar",
            "host;x-amz-content-sha256;x-amz-date",
            "0e769402553da07d7a77420c9165ad407d790c2c4d9c82fc03119ae16a2bb3ed",
        ),
        (
            "s3://cocoon-models/Qwen/Qwen3-8B@9b5a/7ed7.verity",
            Credentials("AKIAEXAMPLE2", "secret/with+chars", "FQoGZXIvYXdzEXAMPLETOKEN"),
            "/cocoon-models/Qwen/Qwen3-8B%409b5a/7ed7.verity",
            "host;x-amz-content-sha256;x-amz-date;x-amz-security-token",
            "2186e368124f62d4d7882118210dbcdc404a52acbdbd0b19fdf721d013c23e85",
        ),
    ],
)
def test_an_s3_get_is_signed_as_botocore_signs_it(
    url: str, credentials: Credentials, path: str, signed_headers: str, signature: str
) -> None:
    got = signed_get(url, S3Options(region="eu-west-1", credentials=credentials), NOON)
    assert got.url == f"https://s3.eu-west-1.amazonaws.com{path}"
    assert got.headers["x-amz-date"] == "20261206T120000Z"
    assert got.headers["x-amz-content-sha256"] == EMPTY_SHA256
    auth = got.headers["Authorization"]
    assert f"Credential={credentials.access_key}/20261206/eu-west-1/s3/aws4_request" in auth
    assert f"SignedHeaders={signed_headers}," in auth
    assert auth.endswith(f"Signature={signature}")
    if credentials.session_token:
        assert got.headers["x-amz-security-token"] == credentials.session_token


def test_a_custom_endpoint_is_addressed_path_style_and_unsigned_without_credentials() -> None:
    got = signed_get("s3://bucket/dir/m.tar", S3Options("http://minio.local:9000/"), NOON)
    assert got.url == "http://minio.local:9000/bucket/dir/m.tar"
    assert "Authorization" not in got.headers
    assert got.headers == {"x-amz-content-sha256": EMPTY_SHA256}


@pytest.mark.parametrize("url", ["s3://bucket", "s3://bucket/", "s3:///key", "s3://b/k?x=1"])
def test_an_s3_url_needs_a_bucket_and_a_key_and_nothing_else(url: str) -> None:
    with pytest.raises(S3SourceError, match="is not s3://BUCKET/KEY"):
        split_s3_url(url)


def test_an_endpoint_that_is_not_http_is_refused() -> None:
    with pytest.raises(S3SourceError, match="not an http"):
        signed_get("s3://b/k", S3Options("ftp://s3.local"), NOON)


def test_credentials_come_from_a_mounted_secret_and_never_show(tmp_path: Path) -> None:
    (tmp_path / "accessKeyId").write_text("AKIAFILE\n")
    (tmp_path / "secretAccessKey").write_text("sEcReT-never-shown\n")
    creds = Credentials.from_dir(tmp_path)
    assert (creds.access_key, creds.secret_key, creds.session_token) == (
        "AKIAFILE",
        "sEcReT-never-shown",
        None,
    )
    assert "sEcReT" not in repr(creds)
    assert "sEcReT" not in repr(S3Options(credentials=creds))


def test_credentials_missing_the_secret_key_are_refused_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "accessKeyId").write_text("AKIAFILE")
    with pytest.raises(S3SourceError, match="secretAccessKey"):
        Credentials.from_dir(tmp_path)

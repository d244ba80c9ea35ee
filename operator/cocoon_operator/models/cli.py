"""``cocoon-operator model build|ensure|gc``: model images, and the node's cache of them.

``model build NAME[@COMMIT[:VERITY]] --out DIR`` keeps build-model's contract.

Like COCOON's ``scripts/build-model``, the last line on stdout is
``Name@commit:verity PATH-TO-TAR`` (``scripts/cocoon-launch``
``build_model_if_needed`` splits it at the first space and finds the hash tree
at the tar's path plus ``.verity``); progress goes to stderr. Exit status: 0
built, 1 the build failed or the root hash is not the VERITY given, 2 bad
arguments (a malformed model spec, an unreadable or empty token file).

The Hub token comes from ``--token-file`` (in production the worker's
``hf_token`` Secret, mounted as a file) or ``$HF_TOKEN``, and the endpoint from
``--endpoint`` or ``$HF_ENDPOINT`` (a mirror), as huggingface_hub reads them.
The token is only ever sent to the endpoint, never printed.

``model ensure --cache DIR --model Name@commit:verity`` makes ``<verity>.tar``
and ``<verity>.tar.verity`` present and verified in a node's cache (the launcher
Pod's init container runs it); ``model gc --cache DIR`` removes models no VM
uses beyond the limits given. See ``docs/models.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from cocoon_operator.models._build import DEFAULT_ENDPOINT, build_model
from cocoon_operator.models._cache import ModelCacheError, Reason
from cocoon_operator.models._ensure import EnsureOptions, Source, collect, ensure_model
from cocoon_operator.models._gc import GcPolicy
from cocoon_operator.models._plan import ModelBuildError, ModelId, parse_model_spec
from cocoon_operator.models._s3 import DEFAULT_REGION, Credentials, S3Options, S3SourceError

EXIT_FAILURE = 1
EXIT_USAGE = 2

BUILD_DOC = """Build a model's tar and dm-verity images as COCOON's scripts/build-model does.

The last line on stdout is `Name@commit:verity PATH-TO-TAR` (the hash tree is at
the tar's path plus .verity); progress goes to stderr. Exit status: 0 built, 1
the build failed or the root hash is not the VERITY given, 2 bad arguments. The
token comes from --token-file or $HF_TOKEN and is never printed.
"""


def hub_endpoint(flag: str | None, environ: Mapping[str, str]) -> str:
    """``--endpoint``, else ``$HF_ENDPOINT``, else huggingface.co; without a trailing slash."""
    return (flag or environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_token(token_file: Path | None, environ: Mapping[str, str]) -> str | None:
    """The token from ``--token-file`` (surrounding whitespace dropped), else ``$HF_TOKEN``.

    A named file that is unreadable or empty is an error rather than an
    anonymous download: a gated model would fail later with a less useful 401.
    """
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ModelBuildError(
                f"cannot read --token-file {token_file}: {exc.strerror or exc}"
            ) from None
        if not token:
            raise ModelBuildError(f"--token-file {token_file} is empty")
        return token
    return environ.get("HF_TOKEN", "").strip() or None


def _build(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        spec = parse_model_spec(args.model)
        token = hub_token(args.token_file, os.environ)
    except ModelBuildError as exc:
        print(f"cocoon-operator model build: {exc}", file=sys.stderr)
        return EXIT_USAGE
    endpoint = hub_endpoint(args.endpoint, os.environ)
    try:
        built = asyncio.run(build_model(spec, args.out, endpoint=endpoint, token=token))
    except ModelBuildError as exc:
        print(f"cocoon-operator model build: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{built.model_id} {built.tar.resolve()}")
    return 0


ENSURE_DOC = """Make a model's two images present and verified in a node's cache.

The files are CACHE/<verity>.tar and CACHE/<verity>.tar.verity, where the
launcher looks for them. They are downloaded from --source-tar and
--source-verity (https; s3://BUCKET/KEY, signed with SigV4 when --s3-credentials-dir
is given, path-style against --s3-endpoint or AWS's endpoint for --s3-region;
or file:// for a local mirror) or, without a source, built from the Hugging
Face Hub as `model build` builds them; either way the root hash must be the
model id's VERITY (checked with veritysetup verify) before anything is
published. One run at a time per model: a second waits for the first and then
finds the model ready. CACHE/<verity>.progress.json says what is happening.

Exit status: 0 ready (the two paths are printed), 1 failed (one line on stderr
with the reason, also in the progress file), 2 bad arguments.
"""

GC_DOC = """Remove models no VM uses from a node's cache, least recently used first.

Every model unused for longer than --max-age-seconds goes, then more of the
oldest until at most --max-count models and --max-bytes bytes are left. Models
named by --in-use (a model id or verity hash; @FILE reads one per line) are
never removed, nor one an `ensure` is working on. Prints one JSON document.
"""

_VERITY_IN = re.compile(r"[0-9a-f]{64}")


def _print_error(command: str, exc: ModelBuildError) -> None:
    reason = exc.reason.value if isinstance(exc, ModelCacheError) else Reason.INVALID.value
    print(f"cocoon-operator model {command}: {reason}: {exc}", file=sys.stderr)


def _ensure(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        spec = parse_model_spec(args.model)
        if spec.commit is None or spec.verity is None:
            raise ModelBuildError(
                f"model {args.model!r}: ensure needs the full id Name@commit:verity"
            )
        if (args.source_tar is None) != (args.source_verity is None):
            raise ModelBuildError("--source-tar and --source-verity go together")
        token = hub_token(args.token_file, os.environ)
        s3 = s3_options(args.s3_endpoint, args.s3_region, args.s3_credentials_dir, os.environ)
    except ModelBuildError as exc:
        _print_error("ensure", exc)
        return EXIT_USAGE
    model = ModelId(spec.name, spec.commit, spec.verity)
    source = Source(args.source_tar, args.source_verity) if args.source_tar else None
    options = EnsureOptions(
        endpoint=hub_endpoint(args.endpoint, os.environ),
        token=token,
        s3=s3,
        min_free_bytes=args.min_free_bytes,
    )
    try:
        ensured = asyncio.run(ensure_model(args.cache, model, source, options))
    except ModelBuildError as exc:
        _print_error("ensure", exc)
        return EXIT_FAILURE
    print(ensured.tar)
    print(ensured.tree)
    return 0


def s3_options(
    endpoint: str | None, region: str | None, credentials: Path | None, environ: Mapping[str, str]
) -> S3Options:
    """``--s3-*``: the endpoint (else AWS's for the region), the region (else
    ``$AWS_REGION``, else us-east-1), credentials from a mounted Secret's files, else
    ``$AWS_ACCESS_KEY_ID``/``$AWS_SECRET_ACCESS_KEY`` (``$AWS_SESSION_TOKEN``), else none."""
    creds = None
    if credentials is not None:
        try:
            creds = Credentials.from_dir(credentials)
        except S3SourceError as exc:
            raise ModelBuildError(str(exc)) from None
    elif environ.get("AWS_ACCESS_KEY_ID") and environ.get("AWS_SECRET_ACCESS_KEY"):
        creds = Credentials(
            environ["AWS_ACCESS_KEY_ID"],
            environ["AWS_SECRET_ACCESS_KEY"],
            environ.get("AWS_SESSION_TOKEN") or None,
        )
    return S3Options(endpoint or None, region or environ.get("AWS_REGION") or DEFAULT_REGION, creds)


def in_use_verities(values: Iterable[str], read: Callable[[Path], str]) -> set[str]:
    """The verity hashes named by ``--in-use`` values: model ids or hashes, ``@FILE`` lists.

    A file holds one per line; blank lines and ``#`` comments are skipped. A
    value that is neither is refused: a typo must not let gc remove a model in use.
    """
    found: set[str] = set()
    for value in values:
        if value.startswith("@"):
            path = Path(value[1:])
            try:
                text = read(path)
            except OSError as exc:
                raise ModelBuildError(f"--in-use {value}: {exc.strerror or exc}") from None
            items = [line.split("#", 1)[0].strip() for line in text.splitlines()]
            found |= in_use_verities([i for i in items if i], read)
            continue
        verity = value.rsplit(":", 1)[-1] if "@" in value else value
        if not _VERITY_IN.fullmatch(verity):
            raise ModelBuildError(
                f"--in-use {value!r} is neither a model id nor a 64-hex verity hash"
            )
        found.add(verity)
    return found


def _gc(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        in_use = in_use_verities(args.in_use, Path.read_text)
    except ModelBuildError as exc:
        _print_error("gc", exc)
        return EXIT_USAGE
    policy = GcPolicy(
        max_age=args.max_age_seconds, max_count=args.max_count, max_bytes=args.max_bytes
    )
    try:
        result = collect(args.cache, in_use, policy, dry_run=args.dry_run)
    except OSError as exc:
        print(f"cocoon-operator model gc: {args.cache}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    doc = {
        "removed": [{"verity": e.verity, "bytes": e.bytes} for e in result.removed],
        "removedBytes": sum(e.bytes for e in result.removed),
        "busy": result.busy,
        "dryRun": args.dry_run,
    }
    print(json.dumps(doc, sort_keys=True))
    return 0


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def add_subparsers(sub: Any) -> None:
    model = sub.add_parser("model", help="model images for worker VMs")
    commands = model.add_subparsers(dest="model_command", required=True)
    build = commands.add_parser(
        "build",
        help="download a Hugging Face model at a commit and build its tar and dm-verity images",
        description=BUILD_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("model", metavar="NAME[@COMMIT[:VERITY]]")
    build.add_argument(
        "--out", type=Path, required=True, help="directory for NAME.tar and NAME.tar.verity"
    )
    build.add_argument(
        "--endpoint", default=None, help=f"Hub URL (default: $HF_ENDPOINT or {DEFAULT_ENDPOINT})"
    )
    build.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="file holding the Hub token (default: $HF_TOKEN)",
    )
    build.set_defaults(func=_build)

    ensure = commands.add_parser(
        "ensure",
        help="make a model's images present and verified in a node's cache",
        description=ENSURE_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ensure.add_argument("--cache", type=Path, required=True, help="the node's model cache")
    ensure.add_argument("--model", required=True, metavar="NAME@COMMIT:VERITY")
    ensure.add_argument("--source-tar", default=None, metavar="URL", help="the prebuilt tar")
    ensure.add_argument(
        "--source-verity", default=None, metavar="URL", help="the prebuilt dm-verity image"
    )
    ensure.add_argument(
        "--endpoint", default=None, help=f"Hub URL (default: $HF_ENDPOINT or {DEFAULT_ENDPOINT})"
    )
    ensure.add_argument("--token-file", type=Path, default=None, help="file holding the Hub token")
    ensure.add_argument(
        "--s3-endpoint",
        default=None,
        metavar="URL",
        help="S3-compatible endpoint for s3:// sources (default: https://s3.REGION.amazonaws.com)",
    )
    ensure.add_argument(
        "--s3-region", default=None, help=f"S3 region (default: $AWS_REGION or {DEFAULT_REGION})"
    )
    ensure.add_argument(
        "--s3-credentials-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="files accessKeyId, secretAccessKey (sessionToken) for s3:// sources"
        " (default: $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY, else unsigned)",
    )
    ensure.add_argument(
        "--min-free-bytes",
        type=_non_negative,
        default=0,
        help="refuse to start unless this much stays free on the cache's file system",
    )
    ensure.set_defaults(func=_ensure)

    gc = commands.add_parser(
        "gc",
        help="remove unused models from a node's cache",
        description=GC_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gc.add_argument("--cache", type=Path, required=True, help="the node's model cache")
    gc.add_argument(
        "--in-use",
        action="append",
        default=[],
        metavar="MODEL|VERITY|@FILE",
        help="a model a VM uses (repeatable; @FILE: one per line)",
    )
    gc.add_argument("--max-age-seconds", type=float, default=None)
    gc.add_argument("--max-count", type=_non_negative, default=None)
    gc.add_argument("--max-bytes", type=_non_negative, default=None)
    gc.add_argument("--dry-run", action="store_true", help="print what would go, remove nothing")
    gc.set_defaults(func=_gc)

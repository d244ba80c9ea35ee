"""``cocoon-operator model build NAME[@COMMIT[:VERITY]] --out DIR``: build-model's contract.

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
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cocoon_operator.models._build import DEFAULT_ENDPOINT, build_model
from cocoon_operator.models._plan import ModelBuildError, parse_model_spec

EXIT_FAILURE = 1
EXIT_USAGE = 2


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


def add_subparsers(sub: Any) -> None:
    model = sub.add_parser("model", help="model images for worker VMs")
    commands = model.add_subparsers(dest="model_command", required=True)
    build = commands.add_parser(
        "build",
        help="download a Hugging Face model at a commit and build its tar and dm-verity images",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
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

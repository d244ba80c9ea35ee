"""``cocoon-operator release import TARBALL --out DIR``: a COCOON release, ready to deploy.

A subcommand of the operator's CLI rather than a ``hack/`` script: the people
who run it are data-centre operators installing a release (the operator
guide's install section), who have the operator's CLI and chart, not a
development checkout's tools; and it shares the launcher's own knowledge of
the release layout (``launcher/_cocoon.py``), so the two cannot disagree.

It writes ``DIR/release/`` (the release, unpacked and checked), ``DIR/SHA256SUMS``
(every file's digest; ``cd DIR/release && sha256sum -c ../SHA256SUMS``),
``DIR/release.yaml`` (the block) and, for the image, the launcher Dockerfile
with the sources it builds, so ``DIR`` is the image's build context. With
``--build`` it builds that context with the checkout's ``hack/build-images``
(buildah, no Docker daemon; as root), which smoke-tests the image, then pushes
it to ``--tag`` and fills the block's image with the pushed digest
(``--no-push``: the digest of the image as built, in this machine's storage);
without ``--build`` the block's image is left empty, to fill in from your own
build (or given with ``--image`` when it is already built). The block goes to
stdout; progress to stderr. Exit status: 0 done, 1 the release was refused or
the build failed, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

# The importer's modules are imported when a release is imported, not for every
# ``cocoon-operator`` start (the launcher Pod's command builds the same parser).
EXIT_FAILURE = 1
EXIT_USAGE = 2

Runner = Callable[[Sequence[str]], None]
Reader = Callable[[Sequence[str]], str]


def run_command(argv: Sequence[str]) -> None:
    """Run a build step, its output going to our stderr; a failure is an import failure."""
    read_command(argv, stdout=sys.stderr)


def read_command(argv: Sequence[str], stdout: IO[str] | int = subprocess.PIPE) -> str:
    """Run a build step and return what it printed (nothing when ``stdout`` is a file)."""
    try:
        done = subprocess.run(list(argv), check=True, stdout=stdout, text=True)
    except FileNotFoundError:
        from cocoon_operator.release._unpack import ReleaseImportError  # noqa: PLC0415

        raise ReleaseImportError(f"{argv[0]} not found: install it or leave out --build") from None
    except subprocess.CalledProcessError as exc:
        from cocoon_operator.release._unpack import ReleaseImportError  # noqa: PLC0415

        step = " ".join([Path(argv[0]).name, *[a for a in argv[1:2] if not a.startswith("-")]])
        raise ReleaseImportError(f"{step} failed with status {exc.returncode}") from None
    return done.stdout or ""


def import_release(
    args: argparse.Namespace, run: Runner = run_command, read: Reader = read_command
) -> str:
    """Do the import; return the block's YAML."""
    from cocoon_operator.release._import import (  # noqa: PLC0415
        CONTEXT_RELEASE,
        build_argv,
        find_source,
        local_digest_argv,
        pinned,
        push_argv,
        release_block,
        release_version,
        render_block,
        sha256sums,
        write_context,
    )
    from cocoon_operator.release._unpack import (  # noqa: PLC0415
        ReleaseImportError,
        release_tree,
        unpack,
    )

    out: Path = args.out
    staging = out / ".unpacked"
    if out.exists() and any(out.iterdir()):
        raise ReleaseImportError(f"--out {out} is not empty: import into a new directory")
    print(f"unpacking {args.tarball} into {out}", file=sys.stderr)
    tree = release_tree(unpack(args.tarball, staging))
    version = release_version(tree, args.version)
    os.rename(tree.root, out / CONTEXT_RELEASE)
    shutil.rmtree(staging, ignore_errors=True)
    (out / "SHA256SUMS").write_text(sha256sums(tree.digests))
    print(f"{len(tree.digests)} files digested into {out / 'SHA256SUMS'}", file=sys.stderr)
    files = tree.files()
    image = args.image
    source = args.source or find_source(Path(__file__).resolve().parent)
    if source is not None:
        write_context(source, out)
    if args.build:
        if source is None:
            raise ReleaseImportError(
                "the launcher Dockerfile was not found: pass --source CHECKOUT"
            )
        run(build_argv(source, out, args.tag, files))
        if args.push:
            digest_file = out / ".image-digest"
            run(push_argv(args.tag, digest_file))
            image = pinned(args.tag, digest_file.read_text())
            print(f"pushed {image}", file=sys.stderr)
        else:
            image = pinned(args.tag, read(local_digest_argv(args.tag)))
            print(f"built {image} (not pushed)", file=sys.stderr)
    text = render_block(release_block(version, files, image))
    (out / "release.yaml").write_text(text)
    return text


def _import(args: argparse.Namespace) -> int:
    if args.build and not args.tag:
        print("--build needs --tag REPOSITORY:TAG", file=sys.stderr)
        return EXIT_USAGE
    if args.build and args.image:
        print("--image names an image already built: leave out --build", file=sys.stderr)
        return EXIT_USAGE
    from cocoon_operator.release._unpack import ReleaseImportError  # noqa: PLC0415

    try:
        text = import_release(args)
    except ReleaseImportError as exc:
        print(f"release import: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    sys.stdout.write(text)
    return 0


def add_subparsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    release = sub.add_parser("release", help="COCOON release tarballs")
    rsub = release.add_subparsers(dest="release_command", required=True)
    imp = rsub.add_parser(
        "import",
        help="unpack and check a COCOON release; print its spec.release block",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("tarball", type=Path, help="the release tarball (.tar, .tar.gz, .tar.xz)")
    imp.add_argument("--out", type=Path, required=True, help="new directory to write into")
    imp.add_argument("--version", help="spec.release.version (default: from release-<commit>/)")
    imp.add_argument("--image", help="the launcher image already built, REPOSITORY@sha256:...")
    imp.add_argument(
        "--build",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="build and smoke-test the launcher image (the checkout's hack/build-images, as"
        " root) and push it to --tag (default: no)",
    )
    imp.add_argument("--tag", help="the built image's name, REPOSITORY:TAG; --build pushes there")
    imp.add_argument(
        "--push",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --build, push to --tag and pin the registry's digest; --no-push pins the"
        " image as built in this machine's storage (default: push)",
    )
    imp.add_argument(
        "--source", type=Path, help="the cocoon-operator checkout holding images/launcher/"
    )
    imp.set_defaults(func=_import)

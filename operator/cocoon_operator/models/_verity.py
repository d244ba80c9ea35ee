"""A dm-verity hash image, read without veritysetup: its superblock and its root hash (pure).

``veritysetup verify TAR TREE ROOT`` says whether the tar matches the tree and
the tree the root hash, but not, when it does not, what the tree's root hash
is. The message for a wrong image names both hashes, so the root is computed
here from the tree's top block; the superblock is checked to be the one COCOON's
``scripts/build-model:138`` writes (format 1, sha256, 4 KiB blocks, its UUID and
17-byte salt), covering the whole tar. The layout is cryptsetup's
(``lib/verity/verity.c``, ``struct verity_sb``): 512 bytes at the start of the
hash image, the tree's levels after it in the first whole hash block, the level
nearest the root first.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass

from cocoon_operator.models._cache import ModelCacheError, Reason
from cocoon_operator.models._plan import BLOCK, VERITY_SALT, VERITY_UUID

SUPERBLOCK_BYTES = 512
_SIGNATURE = b"verity\0\0"
# signature, version, hash_type, uuid, algorithm, data_block_size, hash_block_size,
# data_blocks, salt_size, 6 bytes of padding, salt[256] (the rest is padding).
_LAYOUT = struct.Struct("<8sII16s32sIIQH6x256s")


@dataclass(frozen=True)
class Superblock:
    version: int
    hash_type: int
    uuid: str
    algorithm: str
    data_block_size: int
    hash_block_size: int
    data_blocks: int
    salt: bytes


def parse_superblock(raw: bytes) -> Superblock:
    """The superblock at the start of a hash image; refused when it is not one."""
    if len(raw) < _LAYOUT.size or raw[:8] != _SIGNATURE:
        raise ModelCacheError(
            Reason.CORRUPT, "the verity image has no dm-verity superblock (signature 'verity')"
        )
    sig, version, hash_type, raw_uuid, algo, dbs, hbs, blocks, salt_size, salt = _LAYOUT.unpack(
        raw[: _LAYOUT.size]
    )
    del sig
    if salt_size > len(salt):
        raise ModelCacheError(
            Reason.CORRUPT, f"the verity superblock's salt size {salt_size} > 256"
        )
    return Superblock(
        version=version,
        hash_type=hash_type,
        uuid=str(uuid.UUID(bytes=raw_uuid)),
        algorithm=algo.rstrip(b"\0").decode("ascii", errors="replace"),
        data_block_size=dbs,
        hash_block_size=hbs,
        data_blocks=blocks,
        salt=salt[:salt_size],
    )


def check_cocoon_format(sb: Superblock, tar_bytes: int) -> None:
    """Refuse a hash image build-model would not have written for a tar of ``tar_bytes``."""
    expected = {
        "format": (sb.hash_type, 1),
        "hash algorithm": (sb.algorithm, "sha256"),
        "data block size": (sb.data_block_size, BLOCK),
        "hash block size": (sb.hash_block_size, BLOCK),
        "UUID": (sb.uuid, VERITY_UUID),
        "salt": (sb.salt.hex(), VERITY_SALT),
    }
    for what, (got, want) in expected.items():
        if got != want:
            raise ModelCacheError(
                Reason.CORRUPT,
                f"the verity image's {what} is {got}, not COCOON's {want} (scripts/build-model)",
            )
    if sb.data_blocks * sb.data_block_size != tar_bytes:
        raise ModelCacheError(
            Reason.CORRUPT,
            f"the verity image covers {sb.data_blocks * sb.data_block_size} bytes of data,"
            f" the tar has {tar_bytes}: they are not a pair",
        )


def top_block_in_data(sb: Superblock) -> bool:
    """Whether the root hashes a data block (a one-block image has no tree level)."""
    return sb.data_blocks <= 1


def top_block_offset(sb: Superblock) -> int:
    """Where the block the root hash covers starts: in the tar for a one-block image,
    else the hash image's first block after the superblock."""
    return 0 if top_block_in_data(sb) else sb.hash_block_size


def root_hash(sb: Superblock, top_block: bytes) -> str:
    """The root hash of an image whose top block is ``top_block`` (format 1: salt first)."""
    if len(top_block) != sb.hash_block_size:
        raise ModelCacheError(
            Reason.CORRUPT, f"the verity image is too short for its top block ({len(top_block)})"
        )
    return hashlib.sha256(sb.salt + top_block).hexdigest()


def explain_verify(returncode: int, stderr: str, expected: str, actual: str | None) -> None:
    """Turn ``veritysetup verify``'s exit status into nothing (0) or the reason.

    veritysetup (cryptsetup 2.x) exits 0 when data, tree and root agree; 1 for a
    root hash the tree does not have ("Verification of root hash failed") or bad
    arguments; 2 when a data block does not match the tree ("Verification of data
    area failed"); 4 when a file is missing. ``actual`` is the tree's own root
    hash (:func:`root_hash`), named next to the expected one.
    """
    if returncode == 0 and actual in (None, expected):
        return
    tail = " ".join(stderr.split())[-300:]
    if actual is not None and actual != expected:
        raise ModelCacheError(
            Reason.HASH_MISMATCH,
            f"hash mismatch: the model id says verity {expected},"
            f" the image's root hash is {actual}",
        )
    if returncode == 2:
        raise ModelCacheError(
            Reason.CORRUPT,
            f"the tar does not match its verity image (root hash {expected}): {tail}",
        )
    if returncode == 1 and "Verification of root hash failed" in stderr:
        raise ModelCacheError(
            Reason.HASH_MISMATCH,
            f"hash mismatch: the verity image's root hash is not {expected}: {tail}",
        )
    raise ModelCacheError(Reason.TOOL, f"veritysetup verify failed (exit {returncode}): {tail}")

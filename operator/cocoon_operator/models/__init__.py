"""Model images: a Hugging Face repository at a commit as the two disks a worker VM mounts.

A COCOON worker reads its model from a read-only disk holding a tar of the
repository, checked block by block by dm-verity against a hash tree on a second
disk (COCOON spec/spec-worker/init:11-12: ``veritysetup open`` with the model id's
verity hash, then ``fuse-archive``). The tree's root hash is the ``verity`` of
the model id ``Name@commit:verity``, so the tar must be byte for byte the one
COCOON's ``scripts/build-model`` makes, or no root contract lists the model.

``_plan`` is pure (the spec, the file list, tar's and veritysetup's command
lines, the padding, the hash check); ``_hub`` speaks the Hub's HTTP API;
``_build`` does the I/O; ``cli`` is ``cocoon-operator model build|ensure|gc``.

The node's cache of images (``model ensure``, ``model gc``): ``_cache`` (names,
the plan, space, causes, the progress file), ``_verity`` (the hash image's
superblock and root) and ``_gc`` (which models to remove) are pure; ``_ensure``
does the I/O (the per-model lock, download, verification, publication).
"""

from cocoon_operator.models._build import DEFAULT_ENDPOINT, BuiltModel, build_model, gnu_tar
from cocoon_operator.models._cache import (
    CacheNames,
    CacheState,
    EnsurePlan,
    ModelCacheError,
    Phase,
    Progress,
    Reason,
    Step,
    plan_ensure,
)
from cocoon_operator.models._ensure import Ensured, EnsureOptions, Source, collect, ensure_model
from cocoon_operator.models._gc import CacheEntry, GcPolicy, models_to_collect
from cocoon_operator.models._hub import Hub, RepoInfo
from cocoon_operator.models._plan import (
    VERITY_SALT,
    VERITY_UUID,
    ModelBuildError,
    ModelId,
    ModelSpec,
    check_root_hash,
    image_stem,
    padding,
    parse_model_spec,
    plan_files,
    siblings_are_reliable,
    tar_argv,
    veritysetup_argv,
)

__all__ = [
    "DEFAULT_ENDPOINT",
    "VERITY_SALT",
    "VERITY_UUID",
    "BuiltModel",
    "CacheEntry",
    "CacheNames",
    "CacheState",
    "EnsureOptions",
    "EnsurePlan",
    "Ensured",
    "GcPolicy",
    "Hub",
    "ModelBuildError",
    "ModelCacheError",
    "ModelId",
    "ModelSpec",
    "Phase",
    "Progress",
    "Reason",
    "RepoInfo",
    "Source",
    "Step",
    "build_model",
    "check_root_hash",
    "collect",
    "ensure_model",
    "gnu_tar",
    "image_stem",
    "models_to_collect",
    "padding",
    "parse_model_spec",
    "plan_ensure",
    "plan_files",
    "siblings_are_reliable",
    "tar_argv",
    "veritysetup_argv",
]

"""``cocoon.network/v1alpha1``: the CocoonWorker resource, as typed models.

These models are the single source of the CRD in ``crds/`` (``hack/gen-crds``
renders them through :mod:`cocoon_operator.api.crd`), and the operator parses
every object it reads through them, so the schema the apiserver enforces and
the types the code relies on cannot drift apart.

Rules that span fields, or that forbid an in-place change, are CEL rules
(``x-kubernetes-validations``) attached to the model they concern; each message
names the field it is about. Only what CEL cannot check (the checksum of a
user-friendly TON address) is left to the validating webhook.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from cocoon_operator.api.fieldsets import share_fields_set

GROUP: Final = "cocoon.network"
#: Set (to any new value, e.g. a timestamp) to ask for one payout now:
#: ``kubectl cocoon payout NAME``. The operator acts once per value.
PAYOUT_REQUEST_ANNOTATION: Final = f"{GROUP}/payout-request"
# The operator's finalizer on every worker: its VM is drained, paid out and
# stopped before the worker goes.
WORKER_FINALIZER: Final = f"{GROUP}/finalizer"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "CocoonWorker"
PLURAL: Final = "cocoonworkers"

# One TON is 10^9 nanoTON. Money is integer nanoTON everywhere.
NANO_PER_TON: Final = 1_000_000_000

# COCOON's worker_coefficient is per-mille: 1000 is 1.0x the base price.
COEFFICIENT_MIN: Final = 100
COEFFICIENT_MAX: Final = 10_000
COEFFICIENT_DEFAULT: Final = 1000

# COCOON worker defaults: the worker blocks below 2.1 TON and warns below 5 TON.
FUNDING_MINIMUM_DEFAULT: Final = 5 * NANO_PER_TON
FUNDING_TARGET_DEFAULT: Final = 10 * NANO_PER_TON
FUNDING_FLOOR: Final = 2_100_000_000

HEX64 = r"^[0-9a-f]{64}$"
HEX40 = r"^[0-9a-f]{40}$"
# Raw form "wc:hex" or the 48-character user-friendly base64/base64url form.
# The checksum of the user-friendly form is verified by the webhook.
TON_ADDRESS = r"^(-1|0):[0-9a-fA-F]{64}$|^[A-Za-z0-9_+/-]{48}$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def _cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    out = {"rule": rule, "message": message}
    if field_path is not None:
        out["fieldPath"] = field_path
    return out


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules into the generated CRD."""
    return {"x-kubernetes-validations": list(rules)}


class Model(BaseModel):
    """Base: camelCase on the wire, unknown fields refused, immutable values."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
    )

    def model_post_init(self, context: Any, /) -> None:
        # Kept in memory by the thousand: one copy of each fields set (api/fieldsets.py).
        share_fields_set(self)


class Network(StrEnum):
    MAINNET = "mainnet"
    TESTNET = "testnet"
    LOCAL = "local"


class SecretKeyRef(Model):
    """A key of a Secret in the worker's namespace. The value is never copied
    into the spec, status, events or logs: it is mounted into the launcher Pod."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_LABEL)]
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]


class ReleaseFiles(Model):
    """SHA-256 digests of the release's image files, as COCOON's release tarball names
    them (``images/prod/``, ``scripts/prepare-release``). Each is measured or decides a
    measurement: a mismatch at launch names the file and starts no VM."""

    ovmf: Annotated[str, Field(pattern=HEX64, description="OVMF.fd, the firmware (MRTD)")]
    image: Annotated[
        str, Field(pattern=HEX64, description="image.img, the read-only root disk (roothash)")
    ]
    kernel: Annotated[str, Field(pattern=HEX64, description="image.vmlinuz, the kernel (RTMR1)")]
    initrd: Annotated[str, Field(pattern=HEX64, description="image.initrd (RTMR2)")]
    cmdline: Annotated[
        str, Field(pattern=HEX64, description="image.cmdline, the kernel command line (RTMR2)")
    ]
    # The host's seal server (scripts/prepare-release:74-79 ships both in bin/). The
    # enclave must be the release's own binary: the keys it derives are sealed to its
    # MRENCLAVE (docs/seal-keys.md, "Derive Persistent Key"; dist-worker/README.md:35).
    # Optional so that releases recorded before they were digested stay valid; the
    # operator's seal-server management needs ``enclave`` and says so when it is unset.
    enclave: Annotated[
        str | None,
        Field(
            pattern=HEX64,
            description="bin/enclave.signed.so, the seal server's SGX enclave (sealed disk keys)",
        ),
    ] = None
    seal_server: Annotated[
        str | None,
        Field(pattern=HEX64, description="bin/seal-server, the host program loading the enclave"),
    ] = None


class Release(Model):
    """The COCOON worker distribution the VM boots."""

    version: Annotated[
        str,
        Field(
            min_length=1,
            max_length=64,
            pattern=r"^[0-9A-Za-z][0-9A-Za-z._-]*$",
            description="release version, e.g. 1.2.0",
        ),
    ]
    image: Annotated[
        str,
        Field(
            min_length=1,
            max_length=512,
            pattern=r"^[^\s@]+@sha256:[0-9a-f]{64}$",
            description="launcher image holding the release files, pinned by digest",
        ),
    ]
    files: ReleaseFiles


class SecretRef(Model):
    """A Secret in the worker's namespace, mounted whole (its keys as files)."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_LABEL)]


class S3Access(Model):
    """How ``s3://`` source URLs are fetched: path-style GETs signed with SigV4."""

    endpoint: Annotated[
        str | None,
        Field(
            default=None,
            max_length=2048,
            pattern=r"^https?://[^/?#]+(/[^?#]*)?$",
            description="an S3-compatible endpoint (MinIO, Ceph, R2);"
            " default https://s3.REGION.amazonaws.com",
        ),
    ] = None
    region: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")] = (
        "us-east-1"
    )
    credentials_secret_ref: Annotated[
        SecretRef | None,
        Field(
            default=None,
            description="a Secret with keys accessKeyId, secretAccessKey (and sessionToken);"
            " without it the GETs are unsigned (a public bucket)",
        ),
    ] = None


class ModelSource(Model):
    """Where the model's tar image and dm-verity image come from (prebuilt); the
    node still checks the pair against ``verityHash`` before any VM uses it."""

    tar_url: Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^(https|s3|file)://")]
    verity_url: Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^(https|s3|file)://")]
    s3: S3Access | None = None


class ModelRef(Model):
    """COCOON's ``Name@commit:verity`` model identity."""

    name: Annotated[
        str,
        Field(
            min_length=1,
            max_length=200,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$",
            description="model name, e.g. Qwen/Qwen3-32B",
        ),
    ]
    commit: Annotated[str, Field(pattern=HEX40, description="model repository commit (40 hex)")]
    verity_hash: Annotated[
        str, Field(pattern=HEX64, description="dm-verity root hash of the model image (64 hex)")
    ]
    source: ModelSource | None = None

    @property
    def cocoon_id(self) -> str:
        return f"{self.name}@{self.commit}:{self.verity_hash}"


class ConfigMapKeyRef(Model):
    """A key of a ConfigMap in the worker's namespace, mounted into the launcher Pod."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_LABEL)]
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]


class TonConfig(Model):
    """How the guest reaches TON: COCOON reads files, not URLs (``cocoon-launch``
    ``prepare_spec``: ``ton_config_base`` becomes the measured ``global.config.json``,
    ``ton_config`` the unmeasured ``runtime/global.config.json`` whose liteservers the
    guest merges in, ``reprodebian/cocoon-init/cocoon-render-ton-config``)."""

    fake: Annotated[
        bool,
        Field(
            description="COCOON's fake-TON mode (fake_ton: spec/fake-ton, cocoon_fake_ton on the"
            " kernel command line): no TON at all; development networks only"
        ),
    ] = False
    liteservers: Annotated[
        ConfigMapKeyRef | None,
        Field(
            default=None,
            description="global config with the liteservers to use (ton_config); required"
            " unless fake",
        ),
    ] = None
    base: Annotated[
        ConfigMapKeyRef | None,
        Field(
            default=None,
            description="blockchain constants (ton_config_base); measured into the image hash,"
            " so leave unset to use the release's own spec/mainnet-base-ton-config.json",
        ),
    ] = None


class GPUSelector(Model):
    """Which GPU the VM gets. Always exactly one whole GPU per VM."""

    product: Annotated[
        str | None,
        Field(
            default=None,
            pattern=r"^NVIDIA-H(100|200)[A-Za-z0-9-]*$",
            description="required nvidia.com/gpu.product label; any H100/H200 when unset",
        ),
    ] = None
    count: Annotated[
        Literal[1], Field(description="GPUs per VM; COCOON runs one GPU per worker VM")
    ] = 1


class Funding(Model):
    """Keeps the node wallet within bounds, in nanoTON."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            _cel(
                "self.target > self.minimum",
                "spec.funding.target must be greater than spec.funding.minimum",
                ".target",
            ),
            _cel(
                "!has(self.dailyCap) || self.dailyCap >= self.target - self.minimum",
                "spec.funding.dailyCap must allow at least one top-up (target - minimum)",
                ".dailyCap",
            ),
        ),
    )

    minimum: Annotated[
        int,
        Field(
            ge=FUNDING_FLOOR,
            le=10_000 * NANO_PER_TON,
            description="top up when the node wallet falls below this (nanoTON; at least 2.1 TON)",
            json_schema_extra={"format": "int64"},
        ),
    ] = FUNDING_MINIMUM_DEFAULT
    target: Annotated[
        int,
        Field(
            ge=FUNDING_FLOOR,
            le=10_000 * NANO_PER_TON,
            description="top up to this balance (nanoTON); the operator may cap it lower"
            " (--funding-max-target)",
            json_schema_extra={"format": "int64"},
        ),
    ] = FUNDING_TARGET_DEFAULT
    daily_cap: Annotated[
        int | None,
        Field(
            default=None,
            ge=0,
            le=100_000 * NANO_PER_TON,
            description="most this worker may receive per UTC day (nanoTON); the operator's"
            " own cap applies when lower or unset (--funding-worker-daily-cap)",
            json_schema_extra={"format": "int64"},
        ),
    ] = None


class TcbStatus(StrEnum):
    """Intel's TCB statuses a verified quote can carry."""

    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"


REATTEST_DEFAULT: Final = 900
# COCOON replaces its RA-TLS key hourly; evidence older than that is stale.
REATTEST_MAX: Final = 3600
# COCOON's guest refreshes its quote an hour after the last refresh, up to 5 min
# later (reprodebian/cocoon-init/cocoon-cert-refresh.timer:6-8); 10 min of margin.
QUOTE_MAX_AGE_DEFAULT: Final = 3600 + 300 + 600
QUOTE_MAX_AGE_MIN: Final = 60
QUOTE_MAX_AGE_MAX: Final = 86400


class GpuEvidenceMode(StrEnum):
    IN_GUEST = "InGuest"
    VERIFY = "Verify"


VBIOS_VERSION = r"^[0-9A-Fa-f]{2}(\.[0-9A-Fa-f]{2}){4}$"


class GpuAttestationPolicy(Model):
    """Where the GPU's own evidence is checked.

    COCOON's worker attests its GPU inside the VM at boot (``nvidia-tdx.service``
    runs ``gpu_attest.py``: NVIDIA's local verifier, SPDM report, RIMs) and does
    not start without it; the TDX image hash pins the code that makes that
    check, so ``InGuest``, the default and the only mode COCOON's worker
    supports, trusts it through the quote. ``Verify`` is NOT available with
    COCOON's worker: it needs the project's own GPU evidence endpoint
    (``GET /attestation/gpu`` over RA-TLS), which COCOON does not serve. It is
    refused at admission and never verifies unless the operator is started
    with ``--allow-gpu-verify-mode`` (for images that serve that endpoint, and
    the simulator).
    """

    model_config = ConfigDict(
        json_schema_extra=validations(
            _cel(
                "self.mode == 'Verify' || ((!has(self.allowedDriverVersions)"
                " || size(self.allowedDriverVersions) == 0) && (!has(self.allowedVbiosVersions)"
                " || size(self.allowedVbiosVersions) == 0))",
                "spec.attestation.gpu.allowedDriverVersions and allowedVbiosVersions need"
                " mode Verify: with InGuest the operator never sees the versions",
                ".mode",
            ),
        ),
    )

    mode: Annotated[
        GpuEvidenceMode,
        Field(
            description="InGuest (default; the only mode COCOON's worker supports): the"
            " attested image checks its GPU at boot. Verify: NOT available with COCOON's"
            " worker (it needs the project's GPU evidence endpoint, which COCOON does not"
            " serve); refused unless the operator runs with --allow-gpu-verify-mode",
        ),
    ] = GpuEvidenceMode.IN_GUEST
    allowed_driver_versions: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[0-9][0-9.]*$")]],
        Field(
            max_length=32,
            description="driver versions accepted (e.g. 550.54.15); empty: any",
            json_schema_extra={"x-kubernetes-list-type": "set"},
        ),
    ] = []
    allowed_vbios_versions: Annotated[
        list[Annotated[str, Field(pattern=VBIOS_VERSION)]],
        Field(
            max_length=32,
            description="VBIOS versions accepted (e.g. 96.00.5E.00.01); empty: any",
            json_schema_extra={"x-kubernetes-list-type": "set"},
        ),
    ] = []


class AttestationPolicy(Model):
    """What the worker's TDX evidence must satisfy beyond a valid DCAP chain.

    Which root the chain must end in is not here: it is the operator's
    (Intel's root, unless the operator was started with a test root), so a
    worker's owner cannot lower it.
    """

    accepted_tcb_statuses: Annotated[
        list[TcbStatus],
        Field(
            min_length=1,
            max_length=6,
            description="TCB statuses accepted; anything else fails attestation",
            json_schema_extra={"x-kubernetes-list-type": "set"},
        ),
    ] = [TcbStatus.UP_TO_DATE]
    rejected_advisories: Annotated[
        list[Annotated[str, Field(pattern=r"^INTEL-SA-[0-9]{5}$")]],
        Field(
            max_length=64,
            description="Intel security advisories that fail attestation when they apply",
            json_schema_extra={"x-kubernetes-list-type": "set"},
        ),
    ] = []
    allowed_image_hashes: Annotated[
        list[Annotated[str, Field(pattern=HEX64)]],
        Field(
            max_length=64,
            description="COCOON image hashes accepted (hex); empty: any image the root"
            " contract lists",
            json_schema_extra={"x-kubernetes-list-type": "set"},
        ),
    ] = []
    reattest_seconds: Annotated[
        int,
        Field(
            ge=60,
            le=REATTEST_MAX,
            description="verify the same relayed quote again this often (collateral and"
            " TCB levels change); every new quote is verified at once",
        ),
    ] = REATTEST_DEFAULT
    quote_max_age_seconds: Annotated[
        int,
        Field(
            ge=QUOTE_MAX_AGE_MIN,
            le=QUOTE_MAX_AGE_MAX,
            description="the worker leaves Ready (Attested=False, EvidenceExpired) when its"
            " VM's latest relayed quote is older than this: COCOON's guest asks for a new one"
            " hourly (cocoon-cert-refresh.timer, up to 5 min late), plus a margin",
        ),
    ] = QUOTE_MAX_AGE_DEFAULT
    gpu: GpuAttestationPolicy = GpuAttestationPolicy()


class PayoutPolicy(Model):
    """When the operator asks the worker's proxies to pay out, besides every drain."""

    minimum_unpaid_tokens: Annotated[
        int,
        Field(
            ge=0,
            description="request a payout once this many earned tokens committed to the"
            " blockchain are not paid out yet; 0: only when the worker is drained (deletion,"
            " rotation, ownerAddress change)",
            json_schema_extra={"format": "int64"},
        ),
    ] = 0


class Toleration(Model):
    key: Annotated[str | None, Field(default=None, max_length=316)] = None
    operator: Literal["Exists", "Equal"] | None = None
    value: Annotated[str | None, Field(default=None, max_length=63)] = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: Annotated[
        int | None, Field(default=None, json_schema_extra={"format": "int64"})
    ] = None


class WorkerSpecBase(Model):
    """Every field of a worker's spec but its node wallet key (see CocoonWorkerSpec)."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            _cel(
                "self.network != 'mainnet' || !self.ownerAddress.matches('^[0k]Q')",
                "spec.ownerAddress is a testnet address but spec.network is mainnet",
                ".ownerAddress",
            ),
            _cel(
                "self.network == oldSelf.network",
                "spec.network is immutable: create a new CocoonWorker to change networks",
                ".network",
            ),
            _cel(
                "self.network == 'local' || (has(self.ton) && (self.ton.fake"
                " || has(self.ton.liteservers)))",
                "spec.ton.liteservers is required on mainnet and testnet: COCOON reads its"
                " liteserver config from a file (ton_config)",
                ".ton",
            ),
            _cel(
                "self.network != 'mainnet' || !has(self.ton) || !self.ton.fake",
                "spec.ton.fake is for development networks, not mainnet",
                ".ton",
            ),
            _cel(
                "self.rootContractAddress == oldSelf.rootContractAddress",
                "spec.rootContractAddress is immutable: it identifies the network the worker"
                " is registered in",
                ".rootContractAddress",
            ),
        ),
    )

    release: Release
    model: ModelRef
    owner_address: Annotated[
        str,
        Field(
            max_length=67,
            pattern=TON_ADDRESS,
            description="TON address receiving payouts (raw wc:hex or user-friendly form)",
        ),
    ]
    root_contract_address: Annotated[
        str,
        Field(max_length=67, pattern=TON_ADDRESS, description="COCOON root contract address"),
    ]
    network: Annotated[
        Network,
        Field(
            description="the TON network the worker serves: mainnet, testnet, or local"
            " (development chains only); immutable"
        ),
    ]
    coefficient: Annotated[
        int,
        Field(
            ge=COEFFICIENT_MIN,
            le=COEFFICIENT_MAX,
            description="price multiplier, per-mille (1000 = 1.0x); applied live",
        ),
    ] = COEFFICIENT_DEFAULT
    hf_token_secret_ref: SecretKeyRef | None = None
    ton: Annotated[
        TonConfig | None,
        Field(
            default=None,
            description="TON configuration files for the guest; on the local network, fake TON"
            " when unset",
        ),
    ] = None
    gpu: GPUSelector = GPUSelector()
    funding: Funding = Funding()
    payout: PayoutPolicy = PayoutPolicy()
    attestation: AttestationPolicy = AttestationPolicy()
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = []
    paused: Annotated[
        bool, Field(description="stop reconciling this worker; nothing is changed or deleted")
    ] = False
    register_on_root: Annotated[
        bool,
        Field(
            description="add this worker's attested image hash and its model hash to the root"
            " contract's allow-lists when missing; only on a root owned by the key the operator"
            " was given (--root-owner-secret)",
        ),
    ] = False


class CocoonWorkerSpec(WorkerSpecBase):
    """Desired state of one COCOON worker: one confidential VM with one GPU."""

    node_wallet_key_secret_ref: SecretKeyRef

    @property
    def ton_config(self) -> TonConfig:
        """The TON files the guest gets: fake TON on the local network when none are named
        (a real guest cannot reach the local chain's HTTP API; it speaks to liteservers)."""
        if self.ton is not None:
            return self.ton
        return TonConfig(fake=self.network == Network.LOCAL)


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """A Kubernetes-style condition; lastTransitionTime moves only on a flip."""

    type: Annotated[str, Field(min_length=1, max_length=316)]
    status: ConditionStatus
    reason: Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]
    message: Annotated[str, Field(max_length=32768)] = ""
    observed_generation: Annotated[
        int | None, Field(default=None, ge=0, json_schema_extra={"format": "int64"})
    ] = None
    last_transition_time: Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class GpuSummary(Model):
    """The GPU evidence the operator verified itself (``spec.attestation.gpu.mode: Verify``)."""

    driver_version: str | None = None
    vbios_version: str | None = None
    device_certificate: Annotated[
        str | None, Field(default=None, description="subject of the GPU's signing certificate")
    ] = None
    measurements_checked: Annotated[
        int | None, Field(default=None, description="measurements compared with a RIM")
    ] = None
    revocation: Annotated[
        str | None,
        Field(
            default=None,
            description="the device chain's revocation status: good, or not_checked when"
            " the operator has no OCSP checker",
        ),
    ] = None


class AttestationSummary(Model):
    """The last verified evidence, and the last failure if one followed it."""

    image_hash: str | None = None
    mrtd: str | None = None
    tcb_status: str | None = None
    trust_root: Annotated[
        str | None, Field(default=None, description="intel, or test on the local stack")
    ] = None
    certificate_sha256: Annotated[
        str | None,
        Field(
            default=None,
            description="not written any more: the gate verifies relayed quotes, not RA-TLS"
            " certificates",
        ),
    ] = None
    quote_sha256: Annotated[
        str | None, Field(default=None, description="SHA-256 of the relayed quote last verified")
    ] = None
    report_data: Annotated[
        str | None,
        Field(
            default=None,
            description="the verified quote's REPORTDATA (hex): the SHA-512 of the worker's"
            " RA-TLS public key, as the proxies it connects to see it",
        ),
    ] = None
    quote_captured_at: Annotated[
        str | None,
        Field(
            default=None,
            description="when the host's quote service produced the verified quote",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None
    pod: Annotated[
        str | None, Field(default=None, description="the pod the evidence came from")
    ] = None
    failure: Annotated[str | None, Field(default=None, description="why the last check failed")] = (
        None
    )
    failed_at: Annotated[
        str | None, Field(default=None, json_schema_extra={"format": "date-time"})
    ] = None
    verified_at: Annotated[
        str | None, Field(default=None, json_schema_extra={"format": "date-time"})
    ] = None
    expires_at: Annotated[
        str | None, Field(default=None, json_schema_extra={"format": "date-time"})
    ] = None
    gpu: GpuSummary | None = None
    health_monitor: Annotated[
        str | None,
        Field(
            default=None,
            description="the cross-check of the verified quote with what the guest's health"
            " monitor (COCOON's health-monitor, vsock port 9999) reports, or why there was"
            " none: a host that cannot reach it is not a failure; a mismatch closes the gate"
            " (HealthMismatch)",
        ),
    ] = None


class WalletStatus(Model):
    """The node wallet, as the worker names it and the chain reports it."""

    address: Annotated[str | None, Field(default=None, description="raw form")] = None
    balance: Annotated[
        int | None,
        Field(
            default=None,
            description="nanoTON, read from the chain",
            json_schema_extra={"format": "int64"},
        ),
    ] = None
    funding: Annotated[
        str | None, Field(default=None, description="the last funding decision for this wallet")
    ] = None
    mismatch: Annotated[
        str | None,
        Field(
            default=None,
            description="set when the worker names another wallet than its key and owner give:"
            " nothing is funded then",
        ),
    ] = None
    limit: Annotated[
        str | None,
        Field(
            default=None,
            description="the operator's own policy that held the last top-up back or made it"
            " smaller (FundingLimited, SharedWallet, TcbNotFunded); funding says which limit",
        ),
    ] = None
    checked_at: Annotated[
        str | None, Field(default=None, json_schema_extra={"format": "date-time"})
    ] = None


class ChainStatus(Model):
    """Whether the root contract lists this worker's image and model hashes."""

    revision: Annotated[
        str | None, Field(default=None, description="the worker revision this reading is for")
    ] = None
    image_hash_listed: bool | None = None
    model_hash_listed: bool | None = None
    image_hash: Annotated[
        str | None,
        Field(default=None, description="the attested image hash that was looked up"),
    ] = None
    model_hash: Annotated[
        str | None, Field(default=None, description="SHA-256 of Name@commit:verity")
    ] = None
    source: Annotated[
        str | None,
        Field(default=None, description="who read the root contract: the operator"),
    ] = None
    error: Annotated[
        str | None, Field(default=None, description="why the last reading failed, if it did")
    ] = None
    checked_at: Annotated[
        str | None,
        Field(
            default=None,
            description="when the reading last changed",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None


class EarningsStatus(Model):
    """Token counts the worker reports (COCOON settles them in TON per its price list)."""

    # Summed over the worker's proxies: earned_tokens_committed_to_blockchain and
    # cached_out_tokens (COCOON's WorkerProxyInfo.cpp:79, :82). COCOON reports no
    # count of payouts: ``payouts`` is no longer written, and stays readable for
    # status written by earlier versions.

    earned_tokens: Annotated[int, Field(json_schema_extra={"format": "int64"})] = 0
    paid_out_tokens: Annotated[int, Field(json_schema_extra={"format": "int64"})] = 0
    payouts: Annotated[
        int | None,
        Field(
            default=None,
            description="not written: COCOON workers report no payout count",
            json_schema_extra={"format": "int64"},
        ),
    ] = None
    checked_at: Annotated[
        str | None, Field(default=None, json_schema_extra={"format": "date-time"})
    ] = None


class CocoonWorkerStatus(Model):
    phase: str | None = None
    conditions: Annotated[
        list[Condition],
        Field(
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            }
        ),
    ] = []
    node: str | None = None
    pod: str | None = None
    gpu: Annotated[
        str | None,
        Field(
            default=None,
            description="PCI address of the GPU the worker's VM holds, as the node agent"
            " reports it (empty without node agents)",
        ),
    ] = None
    instance: Annotated[int | None, Field(default=None, ge=0, le=9)] = None
    instances_tried: Annotated[
        list[Annotated[int, Field(ge=0, le=9)]] | None,
        Field(
            default=None,
            max_length=10,
            description="instance indexes whose host ports the scheduler found taken on every"
            " node that could take the pod; not picked again until the pod is scheduled",
        ),
    ] = None
    attestation: AttestationSummary | None = None
    chain: ChainStatus | None = None
    wallet: WalletStatus | None = None
    earnings: EarningsStatus | None = None
    observed_generation: Annotated[
        int | None, Field(default=None, json_schema_extra={"format": "int64"})
    ] = None
    current_revision: str | None = None
    target_revision: str | None = None
    payout_request_handled: Annotated[
        str | None,
        Field(
            default=None,
            description="the cocoon.network/payout-request annotation value last acted upon",
        ),
    ] = None


class CocoonWorker(Model):
    """Envelope used to parse whole objects read from the apiserver."""

    model_config = ConfigDict(extra="ignore")

    spec: CocoonWorkerSpec
    status: CocoonWorkerStatus = CocoonWorkerStatus()


PRINTER_COLUMNS: Final[list[dict[str, Any]]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Node", "type": "string", "jsonPath": ".status.node"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
    {
        "name": "Balance",
        "type": "integer",
        "description": "node wallet balance, nanoTON",
        "jsonPath": ".status.wallet.balance",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

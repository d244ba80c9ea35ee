"""Condition types, reasons and phases of a CocoonWorker: the vocabulary that
status, Events, metrics and GitOps health checks share."""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    SCHEDULED = "Scheduled"
    MODEL_READY = "ModelReady"
    VM_RUNNING = "VMRunning"
    ATTESTED = "Attested"
    ON_CHAIN_ALLOWED = "OnChainAllowed"
    WALLET_FUNDED = "WalletFunded"
    READY = "Ready"


class Reason(StrEnum):
    # Scheduled
    POD_CREATED = "PodCreated"
    SCHEDULED = "Scheduled"
    UNSCHEDULABLE = "Unschedulable"
    NO_POD = "NoPod"
    # ModelReady (True: Ready), from the node agent's report of the model's progress
    # file, else from the launcher pod's init container `model`
    AWAITING_NODE = "AwaitingNode"
    PREPARING = "Preparing"
    DOWNLOADING = "Downloading"
    BUILDING = "Building"
    VERIFYING = "Verifying"
    MODEL_FAILED = "Failed"
    # No node has a ready seal server of the worker's enclave (policy/sealserver.py).
    SEAL_SERVER_NOT_READY = "SealServerNotReady"
    # VMRunning
    VM_STARTING = "VMStarting"
    VM_RUNNING = "VMRunning"
    VM_FAILED = "VMFailed"
    # Attested
    AWAITING_ATTESTATION = "AwaitingAttestation"
    ATTESTATION_VERIFIED = "AttestationVerified"
    # OnChainAllowed / WalletFunded
    NOT_CHECKED = "NotChecked"
    NO_CHAIN_ACCESS = "NoChainAccess"
    LISTED = "Listed"
    NOT_LISTED = "NotListed"
    CHAIN_ERROR = "ChainError"
    FUNDED = "Funded"
    BELOW_MINIMUM = "BelowMinimum"
    INSUFFICIENT_BALANCE = "InsufficientBalance"
    LAUNCH_FAILED = "LaunchFailed"
    WALLET_MISMATCH = "WalletMismatch"
    # Scheduled / WalletFunded: no launcher pod until the node wallet holds COCOON's
    # start floor (a namespace funded before start, policy/chain.py start_hold).
    AWAITING_START_FUNDING = "AwaitingStartFunding"
    # WalletFunded: the operator's own funding policy (policy/treasury.py PolicyCode)
    FUNDING_LIMITED = "FundingLimited"
    SHARED_WALLET = "SharedWallet"
    TCB_NOT_FUNDED = "TcbNotFunded"
    # Ready
    READY = "Ready"
    NOT_READY = "NotReady"
    PAUSED = "Paused"
    DELETING = "Deleting"
    INVALID_SPEC = "InvalidSpec"
    # spec.release.image is not one of the launcher images the operator allows.
    IMAGE_NOT_ALLOWED = "ImageNotAllowed"


class Phase(StrEnum):
    PENDING = "Pending"  # no pod yet, or waiting for a node
    STARTING = "Starting"  # scheduled, VM booting
    ATTESTING = "Attesting"  # VM up, evidence not verified yet
    REGISTERING = "Registering"  # attested; allow-list check and wallet funding
    READY = "Ready"
    PAUSED = "Paused"
    TERMINATING = "Terminating"
    FAILED = "Failed"


CONDITION_ORDER: tuple[ConditionType, ...] = tuple(ConditionType)

"""What the validating webhook checks beyond the CRD schema and CEL (pure).

CEL can match an address's shape but not verify the CRC16 of a user-friendly
TON address, nor decode its flags. A wrong checksum is almost always a typo,
and a typo in ``ownerAddress`` sends a worker's earnings nowhere, so it is
refused at admission with the field named. The same check guards reconcile,
in case the webhook was unavailable (its failure policy is Ignore).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cocoon_operator.ton.address import parse_address
from cocoon_operator.ton.errors import AddressError

ADDRESS_FIELDS = ("ownerAddress", "rootContractAddress")

#: Why ``spec.attestation.gpu.mode: Verify`` is refused unless the operator opts in.
GPU_VERIFY_UNAVAILABLE = (
    "spec.attestation.gpu.mode: Verify needs the project's own GPU evidence endpoint"
    " (GET /attestation/gpu over RA-TLS), which COCOON's worker does not serve: it attests"
    " its GPU inside the VM at boot (nvidia-tdx.service, gpu_attest.py) and the image hash"
    " pins that check. Use InGuest; Verify is accepted only by an operator started with"
    " --allow-gpu-verify-mode, for images that serve the endpoint"
)


def gpu_mode_errors(spec: Mapping[str, Any], *, allow_verify: bool) -> list[str]:
    """The GPU mode COCOON's worker cannot support, unless the operator's own flag allows it.

    COCOON's worker has no GPU evidence endpoint (reference/cocoon: its GPU is
    attested in the guest by ``reprodebian/mkosi.skeleton/etc/systemd/system/
    nvidia-tdx.service:10-11`` running ``reprodebian/gpu_attest/gpu_attest.py``,
    NVIDIA's local verifier, ``:20,28-31``, and the guest does not boot on
    failure); a worker asking for ``Verify`` could never attest. The switch is
    the operator's (a flag), never the worker's.
    """
    attestation = spec.get("attestation")
    gpu = attestation.get("gpu") if isinstance(attestation, Mapping) else None
    mode = gpu.get("mode") if isinstance(gpu, Mapping) else None
    if mode == "Verify" and not allow_verify:
        return [GPU_VERIFY_UNAVAILABLE]
    return []


def address_errors(spec: Mapping[str, Any]) -> list[str]:
    """One message per bad address field, each naming the field."""
    errors = []
    network = spec.get("network")
    for field in ADDRESS_FIELDS:
        value = spec.get(field)
        if not isinstance(value, str):
            continue  # required-ness and type are the schema's job
        try:
            parsed = parse_address(value)
        except AddressError as err:
            errors.append(f"spec.{field}: {err}")
            continue
        if parsed.testnet and network == "mainnet":
            errors.append(f"spec.{field}: a testnet-only address cannot be used on mainnet")
    return errors


def introduced_errors(
    spec: Mapping[str, Any],
    old_spec: Mapping[str, Any] | None,
    *,
    allow_gpu_verify: bool = False,
) -> list[str]:
    """The address and GPU-mode errors a request brings: all of them on a create (``old_spec``
    None), on an update only those the stored object did not have already.

    An object that got in with a bad address while the webhook was down
    (failurePolicy Ignore) must still take updates that leave the address alone
    (the operator's finalizer removal, a label, the fix itself) and deletion;
    refusing them would leave it stuck.
    """
    errors = address_errors(spec) + gpu_mode_errors(spec, allow_verify=allow_gpu_verify)
    if old_spec is None:
        return errors
    before = set(address_errors(old_spec) + gpu_mode_errors(old_spec, allow_verify=False))
    return [e for e in errors if e not in before]

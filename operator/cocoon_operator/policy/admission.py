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


def introduced_errors(spec: Mapping[str, Any], old_spec: Mapping[str, Any] | None) -> list[str]:
    """The address errors a request brings: all of them on a create (``old_spec``
    None), on an update only those the stored object did not have already.

    An object that got in with a bad address while the webhook was down
    (failurePolicy Ignore) must still take updates that leave the address alone
    (the operator's finalizer removal, a label, the fix itself) and deletion;
    refusing them would leave it stuck.
    """
    errors = address_errors(spec)
    if old_spec is None:
        return errors
    before = set(address_errors(old_spec))
    return [e for e in errors if e not in before]

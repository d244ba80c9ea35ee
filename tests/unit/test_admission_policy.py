"""Address checks CEL cannot do: checksums and testnet flags, each naming the field."""

from __future__ import annotations

from cocoon_operator.policy.admission import address_errors, introduced_errors

OWNER = "UQC4RczYnOZQ2jk4cRP5urfxNXstuKocJUDaPO8dtJWJH6GC"
ROOT = "EQCIn28wIKAZ9cTL8ouR65jA1kspvSQosdLN39Mu0lonamXJ"
TESTNET_ROOT = "0QCIn28wIKAZ9cTL8ouR65jA1kspvSQosdLN39Mu0lonaoOG"


def test_valid_friendly_and_raw_addresses_pass() -> None:
    assert address_errors({"ownerAddress": OWNER, "rootContractAddress": ROOT}) == []
    raw = "0:" + "ab" * 32
    assert address_errors({"ownerAddress": raw, "rootContractAddress": raw}) == []


def test_bad_checksum_names_the_field() -> None:
    (error,) = address_errors({"ownerAddress": OWNER[:-1] + "D", "rootContractAddress": ROOT})
    assert error.startswith("spec.ownerAddress: ")
    assert "checksum" in error


def test_testnet_address_refused_on_mainnet_only() -> None:
    spec = {"ownerAddress": OWNER, "rootContractAddress": TESTNET_ROOT}
    assert address_errors({**spec, "network": "testnet"}) == []
    (error,) = address_errors({**spec, "network": "mainnet"})
    assert error.startswith("spec.rootContractAddress: ")


def test_unknown_workchain_refused() -> None:
    (error,) = address_errors({"ownerAddress": "7:" + "ab" * 32})
    assert error.startswith("spec.ownerAddress: ")
    assert "workchain" in error


def test_an_update_is_refused_only_for_errors_it_brings() -> None:
    """An object that got in with a bad address while the webhook was down must
    still take its finalizer's removal, other edits and the fix itself."""
    bad = {"ownerAddress": OWNER[:-1] + "D", "rootContractAddress": ROOT}
    good = {"ownerAddress": OWNER, "rootContractAddress": ROOT}
    assert introduced_errors(bad, None) == address_errors(bad)  # a create: every error
    assert introduced_errors({**bad, "coefficient": 1500}, bad) == []  # leaves it alone
    assert introduced_errors(good, bad) == []  # the fix
    (error,) = introduced_errors(bad, good)  # breaks a good one
    assert error.startswith("spec.ownerAddress: ")
    testnet = {**good, "rootContractAddress": TESTNET_ROOT, "network": "testnet"}
    (error,) = introduced_errors({**testnet, "network": "mainnet"}, testnet)
    assert error.startswith("spec.rootContractAddress: ")

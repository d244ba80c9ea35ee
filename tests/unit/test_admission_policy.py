"""Address checks CEL cannot do: checksums and testnet flags, each naming the field."""

from __future__ import annotations

from cocoon_operator.policy.admission import address_errors, gpu_mode_errors, introduced_errors

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


def test_gpu_verify_mode_is_refused_naming_the_field_unless_the_operator_allows_it() -> None:
    verify = {"attestation": {"gpu": {"mode": "Verify"}}}
    (error,) = gpu_mode_errors(verify, allow_verify=False)
    assert error.startswith("spec.attestation.gpu.mode: Verify")
    assert "COCOON's worker does not serve" in error and "--allow-gpu-verify-mode" in error
    assert gpu_mode_errors(verify, allow_verify=True) == []
    for spec in ({}, {"attestation": {}}, {"attestation": {"gpu": {"mode": "InGuest"}}}):
        assert gpu_mode_errors(spec, allow_verify=False) == []
    assert introduced_errors(verify, None) == [error]  # a create
    assert introduced_errors(verify, None, allow_gpu_verify=True) == []


def test_a_stored_verify_worker_stays_editable_and_switching_to_verify_is_refused() -> None:
    verify = {"attestation": {"gpu": {"mode": "Verify"}}}
    in_guest = {"attestation": {"gpu": {"mode": "InGuest"}}}
    # Got in while the webhook was down: other edits and the fix go through.
    assert introduced_errors({**verify, "coefficient": 1500}, verify) == []
    assert introduced_errors(in_guest, verify) == []
    # An update to Verify brings the error.
    (error,) = introduced_errors(verify, in_guest)
    assert error.startswith("spec.attestation.gpu.mode: Verify")

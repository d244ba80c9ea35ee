"""Test support for attestation: made-up PKIs and the evidence they sign. Never production.

The unit tests, the cluster tests, the benchmarks and the local stack's worker
simulator build evidence here that the real verifiers in the rest of
:mod:`cocoon_operator.attestation` accept only when a caller pins these roots on
purpose. Kept apart from the verification code so the import-linter contract
"Production code never imports test support" can name one package. By role:

- :mod:`.pki`: the Intel-DCAP-shaped test PKI (root, PCK chain, CRLs, signed
  TCB info and QE identity: the collateral);
- :mod:`.quotes`: TDX quotes signed through that PKI, and the TD measurements
  they carry;
- :mod:`.gpu`: the NVIDIA-H100-shaped device PKI and its SPDM evidence;
- :mod:`.ratls`: COCOON-style RA-TLS certificates around any quote;
- :mod:`.revocation`: the fake revocation checker that answers "good".
"""

"""Test doubles and helpers that no production module needs (the simulator included).

What the simulator or the benchmarks need at run time lives in the package
instead (``cocoon_operator.attestation.testing``, ``cocoon_operator.ton.localchain``).
"""

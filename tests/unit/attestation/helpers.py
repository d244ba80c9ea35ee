"""Measurements the attestation tests share: the sample quote's MRTD and RTMRs, and
the MRTD of COCOON's published image."""

from __future__ import annotations

SAMPLE_MRTD = (
    "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407"
    "de03ae6dc5f87f27428b2538873118b7"
)
SAMPLE_RTMR = (
    "44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c"
    "48aca29b220b80b6a540cf994b9bc9c0",
    "0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7"
    "aea8c323c173019b3093d54e579e9378",
    "d833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3"
    "ba80b70870d7330733642e01d48c3132",
    "00" * 48,
)
COCOON_MRTD = (
    "7357a10d2e2724dffe68813e3cc4cfcde6814d749f2fb62e3953e54f6e0b50a2"
    "19786afe2cd478f684b52c61837e1114"
)

"""A worker's ``/jsonstats`` document as COCOON writes it, shared by the parser's and the
client's tests."""

from __future__ import annotations

A = "EQDxcX7o3ip0gD1PxW4CkLE6g-RWWQrfJUl_-Ip-ylgJ3RWH"


B = "EQCXiy0IrbJzr6Rr1rw2hH2PXQ27rrg0V3ybR8j7fFIj7ZPJ"


# http_generate_json_stats (:663-730) as SimpleJsonSerializer writes it
# (runners/helpers/SimpleJsonSerializer.hpp): one element a line, doubles in
# six significant digits, an AmortCounterList as [total, 1s .. 1d]
# (runners/helpers/AmortCounter.h:80-91).
JSONSTATS = """{
  "status": {
    "wallet_balance": 5493000000,
    "actual_image_hash": true,
    "actual_model": false,
    "ton_last_synced_at": 1765000000,
    "enabled": true,
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "git_commit_data": "2025-11-28"
  },
  "stats": {
    "queries": [
      1.23457e+06,
      0.5,
      0.48,
      0.51,
      0.5,
      0.49,
      0.3
    ],
    "success": [
      1.2345e+06,
      0.5,
      0.48,
      0.51,
      0.5,
      0.49,
      0.3
    ]
  },
  "wallet": {
    "address": "UQCt3_wallet_address_000000000000000000000000000",
    "balance": 5493000000,
    "seqno": 7,
    "pending_transactions_cnt": 0,
    "active_transactions_cnt": 0
  },
  "localconfig": {
    "root_address": "EQroot",
    "owner_address": "UQowner",
    "model": "Qwen/Qwen3-0.6B@c1899de:5e5e",
    "coefficient": 1500,
    "check_proxy_hash": true
  },
  "proxies": [
    {
      "sc_inited": true,
      "proxy_sc_address": "PROXY_A",
      "proxy_public_key": "ab",
      "sc_address": "EQworker_sc",
      "earned_tokens_committed_to_blockchain": 3000,
      "earned_tokens_committed_to_proxy_db": 3120,
      "earned_tokens_max_known": 3120,
      "cached_out_tokens": 1000,
      "expected_cached_out_tokens": 1000,
      "running_request": false,
      "params_version": 3
    },
    {
      "sc_inited": true,
      "proxy_sc_address": "PROXY_B",
      "proxy_public_key": "cd",
      "sc_address": "EQworker_sc2",
      "earned_tokens_committed_to_blockchain": 2000,
      "earned_tokens_committed_to_proxy_db": 2000,
      "earned_tokens_max_known": 2000,
      "cached_out_tokens": 0,
      "expected_cached_out_tokens": 2000,
      "running_request": true,
      "params_version": 3
    }
  ]
}""".replace("PROXY_A", A).replace("PROXY_B", B)

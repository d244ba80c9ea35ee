"""COCOON's worker configuration (INI ``[node]``), rendered from the spec (pure).

COCOON reads one INI file. Three of its values cannot be known or must not be
written here: ``node_wallet_key`` and ``hf_token`` are secrets, and ``gpu`` (the
PCI address) is only known on the node once the device plugin has allocated a
GPU to the launcher. The rendered file therefore names *files* for those values
(``*_file`` keys under ``[launcher]``); the launcher reads them at start and
writes the final config into the VM's read-only spec share, so no secret ever
sits in a ConfigMap, the API, an Event or a log.
"""

from __future__ import annotations

import configparser
import io
from typing import Final

from cocoon_operator.api.instance import MAX_INSTANCES, InstanceSlot
from cocoon_operator.api.v1alpha1 import CocoonWorkerSpec, Network

__all__ = ["MAX_INSTANCES", "InstanceSlot", "worker_config"]

SECRETS_DIR: Final = "/run/secrets/cocoon"
NODE_WALLET_KEY_FILE: Final = f"{SECRETS_DIR}/node-wallet-key"
HF_TOKEN_FILE: Final = f"{SECRETS_DIR}/hf-token"
PERSISTENT_DIR: Final = "/var/lib/cocoon"
PERSISTENT_IMAGE: Final = f"{PERSISTENT_DIR}/persistent.img"
# Liteserver configs: the public ones for mainnet/testnet; the local chain's
# is mounted by the local stack.
TON_CONFIGS: Final = {
    Network.MAINNET: "https://ton.org/global.config.json",
    Network.TESTNET: "https://ton.org/testnet-global.config.json",
    Network.LOCAL: "/etc/cocoon/ton/local.config.json",
}


def worker_config(spec: CocoonWorkerSpec, slot: InstanceSlot) -> str:
    """The INI file for one worker; secrets and the GPU address are file references."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case
    parser["node"] = {
        "type": "worker",
        "model": spec.model.cocoon_id,
        "owner_address": spec.owner_address,
        "root_contract_address": spec.root_contract_address,
        "ton_config": TON_CONFIGS[spec.network],
        "instance": str(slot.index),
        "worker_coefficient": str(spec.coefficient),
        "persistent": PERSISTENT_IMAGE,
    }
    launcher = {
        "node_wallet_key_file": NODE_WALLET_KEY_FILE,
        "gpu_from_env": "PCI_RESOURCE_NVIDIA_COM_PGPU",
        "http_port": str(slot.http_port),
        "ratls_port": str(slot.ratls_port),
        "guest_cid": str(slot.vsock_cid),
    }
    if spec.hf_token_secret_ref is not None:
        launcher["hf_token_file"] = HF_TOKEN_FILE
    parser["launcher"] = launcher
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()

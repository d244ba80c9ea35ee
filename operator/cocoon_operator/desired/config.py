"""COCOON's worker configuration (``worker.conf``, INI ``[node]``), rendered from the spec (pure).

The ``[node]`` section is COCOON's own, read by the launcher exactly as
``scripts/cocoon-launch`` reads it (``load_config_from_file``,
``reference/cocoon/scripts/cocoon-launch:204-331``). Four of its values cannot be
written here: ``node_wallet_key`` and ``hf_token`` are secrets, ``gpu`` (the PCI
address) is known only on the node once the device plugin has allocated a GPU,
and ``persistent`` depends on the release's measured identity, which the
launcher computes from the files it holds. The ``[launcher]`` section (which
cocoon-launch never reads) names where the launcher finds them, so no secret
ever sits in a ConfigMap, the API, an Event or a log.
"""

from __future__ import annotations

import configparser
import io
from typing import Final

from cocoon_operator.api.instance import MAX_INSTANCES, InstanceSlot
from cocoon_operator.api.v1alpha1 import CocoonWorkerSpec

__all__ = ["MAX_INSTANCES", "InstanceSlot", "worker_config"]

SECRETS_DIR: Final = "/run/secrets/cocoon"
NODE_WALLET_KEY_FILE: Final = f"{SECRETS_DIR}/node-wallet-key"
HF_TOKEN_FILE: Final = f"{SECRETS_DIR}/hf-token"
# The s3 source credentials Secret, mounted whole for the model init container alone.
S3_CREDENTIALS_DIR: Final = "/run/secrets/cocoon-s3"
# The worker's own directory on the node: one persistent disk per measured identity.
PERSISTENT_DIR: Final = "/var/lib/cocoon/persistent"
# The node's model images (<verity>.tar and <verity>.tar.verity), read-only to the VM.
MODELS_DIR: Final = "/var/lib/cocoon/models"
# The TON configuration files, from the ConfigMaps spec.ton names.
TON_CONFIG_DIR: Final = "/etc/cocoon/ton"
TON_CONFIG_FILE: Final = f"{TON_CONFIG_DIR}/global.config.json"
TON_BASE_CONFIG_DIR: Final = "/etc/cocoon/ton-base"
TON_BASE_CONFIG_FILE: Final = f"{TON_BASE_CONFIG_DIR}/base.config.json"
# The variable the GPU device plugin sets to the allocated GPU's PCI address.
GPU_ENV: Final = "PCI_RESOURCE_NVIDIA_COM_PGPU"


def worker_config(spec: CocoonWorkerSpec, slot: InstanceSlot) -> str:
    """The worker.conf for one worker; secrets, GPU and disk are left to the launcher."""
    parser = configparser.ConfigParser(interpolation=None)
    ton = spec.ton_config
    node = {
        "type": "worker",
        "model": spec.model.cocoon_id,
        "owner_address": spec.owner_address,
        "root_contract_address": spec.root_contract_address,
        "instance": str(slot.index),
        "worker_coefficient": str(spec.coefficient),
    }
    if ton.fake:
        node["fake_ton"] = "true"
    else:
        node["ton_config"] = TON_CONFIG_FILE
        if ton.base is not None:
            node["ton_config_base"] = TON_BASE_CONFIG_FILE
    parser["node"] = node
    launcher = {
        "node_wallet_key_file": NODE_WALLET_KEY_FILE,
        "gpu_from_env": GPU_ENV,
        "persistent_dir": PERSISTENT_DIR,
        "model_dir": MODELS_DIR,
    }
    if spec.hf_token_secret_ref is not None:
        launcher["hf_token_file"] = HF_TOKEN_FILE
    parser["launcher"] = launcher
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()

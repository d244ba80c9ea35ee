"""``python -m cocoon_operator.attestation {tdx,gpu} ...``"""

from cocoon_operator.attestation.cli import run

run()

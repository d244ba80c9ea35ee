"""``python -m cocoon_operator.kubectl_plugin`` is ``kubectl cocoon``."""

from cocoon_operator.kubectl_plugin.cli import run

run()

"""``python -m cocoon_operator`` is the ``cocoon-operator`` command."""

from cocoon_operator.cli import run

run()

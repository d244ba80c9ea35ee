"""``python -m cocoon_operator.ton.localchain``: see :mod:`.cli`."""

from cocoon_operator.ton.localchain.cli import main

main()

"""``kubectl cocoon``: a kubectl plugin for CocoonWorkers (``kubectl-cocoon`` on PATH).

:mod:`.render` holds the pure rendering (objects in, text out); :mod:`.cli`
the arguments and the few apiserver calls. Nothing in the operator imports it.
"""

from cocoon_operator.kubectl_plugin.cli import main, run

__all__ = ["main", "run"]

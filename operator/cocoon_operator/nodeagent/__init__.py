"""The per-node agent: what a worker host provides, as a :class:`NodeReport`.

Runs on every TDX + CC GPU node (the chart's DaemonSet). Each pass it probes
the host through a read-only view of it (``/sys``, ``/dev``, ``/proc`` and the
launcher's state files under ``/run/cocoon``) and the host's vsock services,
then writes the report to its node's ConfigMap when it changed (or to show it
is alive). The operator reads the reports to fill in each worker's GPU, and to
report a VM that still runs with no launcher pod (a force-deleted pod, say),
which may hold a GPU the scheduler believes free.

``_probe`` is the host side (files and sockets, no Kubernetes); ``_publish``
is the Kubernetes side; ``agent`` runs the two in a loop.
"""

from cocoon_operator.launcher._seal import connect_vsock
from cocoon_operator.nodeagent._probe import (
    LAUNCHER_STATE_DIR,
    QGS_PORT,
    SEAL_SERVER_PORT,
    HostView,
    VsockConnect,
    probe,
)

__all__ = [
    "LAUNCHER_STATE_DIR",
    "QGS_PORT",
    "SEAL_SERVER_PORT",
    "HostView",
    "VsockConnect",
    "connect_vsock",
    "probe",
]

"""cocoon-operator: run COCOON confidential GPU workers on Kubernetes.

The package is layered (enforced by import-linter, see pyproject.toml):
``handlers`` -> ``reconcile`` -> ``k8s`` / ``desired`` / ``policy`` -> ``api``.
Domain libraries (``attestation``, ``ton``) are independent of Kubernetes.
"""

__version__ = "0.1.0.dev0"

"""Pure builders: desired Kubernetes objects and worker config from the typed spec."""

"""Pure decisions over gathered input: no I/O, no clock, no Kubernetes client."""

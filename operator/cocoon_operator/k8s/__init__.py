"""The Kubernetes edge: client construction and (later) compare-then-patch apply."""

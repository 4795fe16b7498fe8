"""Keep watch on a live deployment: snapshots of every node and of vLLM's `/metrics` (`monitor`),
canaries that catch a sick server (`watch`), their Prometheus exporter, the live web page, and soak.

Everything here returns typed data or runs until cancelled; the CLI prints.
"""

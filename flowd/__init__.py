"""flowd: a NetFlow v5/v9, IPFIX and sFlow v5 collector that indexes ECS documents."""

__version__ = "0.1.0"

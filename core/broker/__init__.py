"""The broker core both roles share, and its gRPC adapter (see core/broker/core.py)."""

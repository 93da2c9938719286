"""Test helpers shared across test packages (the fault-injecting JSON-RPC proxy)."""

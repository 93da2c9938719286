"""Tests of scanner/chain: the JSON-RPC client, the provider-limit table and the reader."""

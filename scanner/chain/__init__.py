"""The node adapter: the only package that talks HTTP to a node.

- :mod:`scanner.chain.rpc`: :class:`RpcClient` (JSON-RPC calls and batches, retries, failover,
  a byte cap and one deadline per attempt); :mod:`scanner.chain.retrying`: its backoff and observer;
- :mod:`scanner.chain.jsonrpc`: envelopes and the mapping of answers onto :mod:`scanner.errors`;
- :mod:`scanner.chain.limits`: what providers say when a getLogs range is too large;
- :mod:`scanner.chain.reader`: :class:`ChainReader`, typed reads; :mod:`scanner.chain.shapes`:
  each answer parsed into typed values or a MalformedResponse;
- :mod:`scanner.chain.heads`: :class:`~scanner.chain.heads.HeadSubscription`, ``newHeads`` over
  a websocket (``ws_url``), which wakes the chain's tick.
"""

from scanner.chain.reader import ChainReader
from scanner.chain.retrying import Backoff, NullObserver, RpcObserver
from scanner.chain.rpc import RpcClient

__all__ = ["Backoff", "ChainReader", "NullObserver", "RpcClient", "RpcObserver"]

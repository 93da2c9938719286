"""A fault-injecting JSON-RPC proxy for tests: forwards to a real node, misbehaves on request.

    async with FaultProxy(anvil_url) as proxy:
        proxy.fail_http("eth_blockNumber", 500, times=2)      # two HTTP 500s, then forward
        proxy.rate_limit("eth_chainId", retry_after="1", times=1)
        gate = proxy.hold("eth_getLogs")                      # block until gate.release()
        client = RpcClient("test", [proxy.url + "/v3/KEY"])  # the path is ignored
        ...
        assert proxy.count("eth_blockNumber") == 3

Faults are rules on a JSON-RPC method (``"*"`` for any), applied ``times`` times (``None``:
until :meth:`FaultProxy.reset`). Whole-request faults (hold, delay, drop, HTTP status, malformed
body) apply to an HTTP request if any of its items matches; per-item faults (a JSON-RPC error, a
getLogs range cap, a lagging replica) shape each item of a batch separately. Everything else is
forwarded to the upstream node (a batch as one batch).

For subprocess tests, :class:`ThreadedProxy` runs the same proxy on its own loop in a thread;
rules can be set from the test's thread, and a :class:`Gate` can be waited for from either side.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp
import orjson
from aiohttp import web

Json = dict[str, Any]
T = TypeVar("T")
ALCHEMY_STYLE = (
    "Log response size exceeded. You can make eth_getLogs requests with up to a {max} block "
    "range. Based on your parameters, this block range should work: [{ok_start_hex}, "
    "{ok_end_hex}]"
)


class Signal:
    """A one-shot event that any thread and any event loop can wait for and set."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread_event = threading.Event()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def is_set(self) -> bool:
        return self._thread_event.is_set()

    def set(self) -> None:
        with self._lock:
            self._thread_event.set()
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    async def wait(self) -> None:
        """Wait on the running loop (wrap in ``asyncio.timeout`` to bound it)."""
        event = asyncio.Event()
        with self._lock:
            if self._thread_event.is_set():
                return
            self._waiters.append((asyncio.get_running_loop(), event))
        await event.wait()

    def wait_sync(self, timeout: float | None = None) -> bool:
        """Block the calling thread; False on timeout."""
        return self._thread_event.wait(timeout)


class Gate:
    """Holds requests of a method until :meth:`release`; usable from any thread or loop."""

    def __init__(self) -> None:
        self._reached = Signal()
        self._released = Signal()
        self.hits = 0

    @property
    def reached(self) -> bool:
        """True once a request has arrived at the gate."""
        return self._reached.is_set()

    def release(self) -> None:
        """Let every held (and every later) request through."""
        self._released.set()

    async def wait_reached(self) -> None:
        """Wait until a request is held here (bound it with ``asyncio.timeout``)."""
        await self._reached.wait()

    def wait_reached_sync(self, timeout: float = 10.0) -> bool:
        """Block the calling thread until a request is held here; False on timeout."""
        return self._reached.wait_sync(timeout)

    async def _pass(self) -> None:
        self.hits += 1
        self._reached.set()
        await self._released.wait()


@dataclass
class Rule:
    """One programmed fault. ``times`` counts down; at 0 the rule is spent."""

    kind: str
    method: str
    times: int | None = None
    status: int = 500
    seconds: float = 0.0
    retry_after: str | None = None
    body: bytes = b""
    error: Json = field(default_factory=dict)
    gate: Gate | None = None
    max_blocks: int = 0
    message: str = ""
    in_data: bool = False
    result: Any = None
    where: Callable[[Json], bool] | None = None  # only items this holds for (None: any)

    def matches(self, method: str) -> bool:
        return self.times != 0 and self.method in ("*", method)

    def use(self) -> None:
        if self.times is not None:
            self.times -= 1


_WHOLE_REQUEST = ("hold", "delay", "drop", "http", "malformed")


class FaultProxy:
    """A JSON-RPC HTTP proxy on 127.0.0.1 (a free port) in front of ``upstream``."""

    def __init__(self, upstream: str, *, host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.host = host
        self.port = 0
        self.rules: list[Rule] = []
        self.counts: Counter[str] = Counter()
        self.http_requests = 0
        self.lag_blocks = 0
        self.frozen_at: int | None = None
        self.reversed_batches = False
        self.lag_every_other = False
        self.lag_only: str | None = None
        self.lagged_requests = 0  # HTTP requests answered by the lagging replica
        self.pruned_below: int | None = None
        self.pruned_logs = True
        self.pruned_expired = False
        self.left_out: set[int] = set()  # blocks whose logs a ``leave_out_logs`` answer hid
        self._balancer = random.Random(10)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._gates: list[Gate] = []

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.1
        )
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))

    async def stop(self) -> None:
        for gate in self._gates:
            gate.release()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- programming -------------------------------------------------------------------------

    def _add(self, rule: Rule) -> Rule:
        self.rules.append(rule)
        return rule

    def fail_http(
        self, method: str, status: int = 500, *, times: int | None = None, body: bytes = b"oops"
    ) -> Rule:
        """Answer the whole request with an HTTP ``status`` (and ``body``)."""
        return self._add(Rule("http", method, times, status=status, body=body))

    def rate_limit(
        self, method: str, *, retry_after: str | None = None, times: int | None = None
    ) -> Rule:
        """Answer HTTP 429, with a ``Retry-After`` header when given."""
        return self._add(Rule("http", method, times, status=429, retry_after=retry_after))

    def delay(self, method: str, seconds: float, *, times: int | None = None) -> Rule:
        """Wait ``seconds`` before handling (to trigger client timeouts)."""
        return self._add(Rule("delay", method, times, seconds=seconds))

    def drop(self, method: str, *, times: int | None = None) -> Rule:
        """Close the connection without an answer."""
        return self._add(Rule("drop", method, times))

    def malformed(
        self, method: str, *, times: int | None = None, body: bytes = b"<html>bad gateway"
    ) -> Rule:
        """Answer HTTP 200 with a body that is not JSON (or whatever ``body`` says)."""
        return self._add(Rule("malformed", method, times, body=body))

    def rpc_error(
        self,
        method: str,
        message: str,
        *,
        code: int = -32000,
        data: Any = None,
        times: int | None = None,
    ) -> Rule:
        """Answer the matching items with a JSON-RPC error object."""
        error: Json = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        return self._add(Rule("rpc_error", method, times, error=error))

    def cap_logs_range(
        self,
        max_blocks: int,
        *,
        message: str = ALCHEMY_STYLE,
        code: int = -32602,
        in_data: bool = False,
        times: int | None = None,
    ) -> Rule:
        """Refuse ``eth_getLogs`` over more than ``max_blocks`` blocks, like a provider.

        ``message`` is formatted with ``max``, ``start``, ``end``, ``ok_start_hex``,
        ``ok_end_hex`` (a range that would work); ``in_data`` puts it under ``error.data``.
        """
        rule = Rule("cap", "eth_getLogs", times, max_blocks=max_blocks, message=message)
        rule.error = {"code": code}
        rule.in_data = in_data
        return self._add(rule)

    def truncate(self, method: str, *, times: int | None = None) -> Rule:
        """Forward, then send only the first half of the answer's body (a cut connection)."""
        return self._add(Rule("truncate", method, times))

    def drop_batch_item(self, method: str, *, times: int | None = None) -> Rule:
        """Leave the answer to one item of ``method`` out of a batch's answer."""
        return self._add(Rule("drop_item", method, times))

    def null_result(self, method: str, *, times: int | None = None) -> Rule:
        """Answer the matching items with ``"result": null`` (a block the node showed a moment
        ago, answered by a replica that does not have it)."""
        return self._add(Rule("null", method, times))

    def answer(self, method: str, result: Any, *, times: int | None = None) -> Rule:
        """Answer the matching items with ``"result": result`` (any JSON: a malformed shape)."""
        return self._add(Rule("result", method, times, result=result))

    def leave_out_logs(self, *, times: int | None = 1) -> Rule:
        """Answer the next ``times`` ``eth_getLogs`` items with ``[]``, but never for a block
        already left out once: a provider that left logs out of one read (a replica still
        indexing) and shows them to a later one. A read that covers such a block is answered
        truly, and uses up nothing."""
        return self._add(Rule("leave_out", "eth_getLogs", times))

    async def _left_out(self, item: Json) -> Json | None:
        if not any(r.kind == "leave_out" and r.matches("eth_getLogs") for r in self.rules):
            return None
        blocks = await self._blocks_of((item.get("params") or [{}])[0])
        if blocks is None or blocks & self.left_out:
            return None
        self._take(("leave_out",), ["eth_getLogs"])
        self.left_out |= blocks
        return {"jsonrpc": "2.0", "id": item.get("id"), "result": []}

    async def _blocks_of(self, flt: Any) -> set[int] | None:
        """The block numbers an ``eth_getLogs`` filter covers (None: not known here)."""
        if not isinstance(flt, dict):
            return None
        if "blockHash" in flt:
            call = {"jsonrpc": "2.0", "id": 0, "method": "eth_getBlockByHash"}
            (answer,) = await self._upstream([{**call, "params": [flt["blockHash"], False]}])
            block = answer.get("result")
            return None if not isinstance(block, dict) else {int(block["number"], 16)}
        call = {"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber"}
        head = int((await self._upstream([call]))[0]["result"], 16)
        start = _block_number(flt.get("fromBlock", "latest"), head)
        end = min(_block_number(flt.get("toBlock", "latest"), head), head)
        return set(range(start, end + 1))

    def hide_log(self, tx_hash: str, *, times: int | None = 1) -> Rule:
        """Leave the logs of transaction ``tx_hash`` out of ``eth_getLogs`` answers (the next
        ``times`` answers that hold them): a replica that has not indexed them yet."""
        return self._add(Rule("hide_log", "eth_getLogs", times, message=tx_hash.lower()))

    def _hide_logs(self, answer: Json) -> Json:
        result = answer.get("result")
        if not isinstance(result, list):
            return answer
        for rule in self.rules:
            if rule.kind != "hide_log" or not rule.matches("eth_getLogs"):
                continue
            kept = [e for e in result if str(e.get("transactionHash")).lower() != rule.message]
            if len(kept) < len(result):
                rule.use()
                result = kept
        return {**answer, "result": result}

    def prune_below(self, number: int | None, *, logs: bool = True, expired: bool = False) -> None:
        """Act as a pruned node (or one started from a snapshot) that has no block below
        ``number``: a header answers ``null``, ``eth_getLogs`` from such a block the error
        geth gives ("header not found"); with ``logs=False`` the logs are still served (an
        index or another replica behind the same URL has them); with ``expired`` both answer
        what geth answers for expired history (EIP-4444: code 4444, "pruned history
        unavailable"). None: show every block again."""
        self.pruned_below = number
        self.pruned_logs = logs
        self.pruned_expired = expired

    def _pruned(self, item: Json, method: str) -> Json | None:
        if self.pruned_below is None:
            return None
        first = (item.get("params") or [None])[0]
        if method == "eth_getLogs" and isinstance(first, dict) and self.pruned_logs:
            first = first.get("fromBlock")
        if not (isinstance(first, str) and first.startswith("0x")):
            return None
        if int(first, 16) >= self.pruned_below:
            return None
        if self.pruned_expired and method in ("eth_getLogs", "eth_getBlockByNumber"):
            return _err(item, 4444, "pruned history unavailable")
        if method == "eth_getLogs":
            return _err(item, -32000, "header not found")
        if method == "eth_getBlockByNumber":
            return {"jsonrpc": "2.0", "id": item.get("id"), "result": None}
        return None

    def reverse_batches(self, on: bool = True) -> None:
        """Answer every batch in reverse order (JSON-RPC allows any order)."""
        self.reversed_batches = on

    def hold(
        self, method: str, *, times: int | None = 1, where: Callable[[Json], bool] | None = None
    ) -> Gate:
        """Hold requests of ``method`` (with an item ``where`` holds for) until the returned
        gate is released."""
        gate = Gate()
        self._gates.append(gate)
        self._add(Rule("hold", method, times, gate=gate, where=where))
        return gate

    def lag(self, blocks: int, *, every_other: bool = False, only: str | None = None) -> None:
        """Act as a replica ``blocks`` behind upstream (0 stops): head−N for eth_blockNumber,
        null for blocks and receipts above it, getLogs clamped to it, unknown block hashes
        above it. ``every_other``: a load balancer over a synced node and that replica, which
        answers half the HTTP requests (drawn from a seeded generator: a strict alternation
        would lock into the client's own request pattern, which no real balancer does).
        ``only``: the replica answers just the HTTP requests that hold this method (a balancer
        that routes, say, every eth_getLogs to it), every item of such a request."""
        self.lag_blocks = blocks
        self.lag_every_other = every_other
        self.lag_only = only
        self._balancer = random.Random(10)

    async def freeze(self) -> int:
        """Act as a stalled node: its head stays at upstream's current head (returned) while
        upstream moves on; blocks above it are null, as for a lagging replica. ``thaw`` ends it."""
        answer = await self._upstream([{"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber"}])
        self.frozen_at = int(answer[0]["result"], 16)
        return self.frozen_at

    def thaw(self) -> None:
        self.frozen_at = None

    def reset(self) -> None:
        """Forget every rule, count and lag (held requests are released)."""
        for gate in self._gates:
            gate.release()
        self.rules.clear()
        self.counts.clear()
        self.http_requests = 0
        self.lag_blocks = 0
        self.frozen_at = None
        self.reversed_batches = False
        self.left_out.clear()

    def count(self, method: str) -> int:
        """How many JSON-RPC items of ``method`` arrived (batch items count one each)."""
        return self.counts[method]

    # -- serving -----------------------------------------------------------------------------

    def _take(self, kinds: tuple[str, ...], methods: list[str]) -> Rule | None:
        for rule in self.rules:
            if rule.kind in kinds and any(rule.matches(m) for m in methods):
                rule.use()
                return rule
        return None

    def _take_for(self, kind: str, items: list[Json]) -> Rule | None:
        """The first live rule of ``kind`` that an item's method and its ``where`` match."""
        for rule in self.rules:
            if rule.kind == kind and any(
                rule.matches(str(i.get("method"))) and (rule.where is None or rule.where(i))
                for i in items
            ):
                rule.use()
                return rule
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.http_requests += 1
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return web.Response(status=400, text="proxy: request is not JSON")
        items: list[Json] = body if isinstance(body, list) else [body]
        methods = [str(item.get("method")) for item in items]
        self.counts.update(methods)
        early = await self._whole_request_faults(request, items)
        if early is not None:
            return early
        answers = await self._answer_items(items)
        if isinstance(body, list):
            answers = self._garble_batch(answers, methods)
        payload = answers if isinstance(body, list) else answers[0]
        content = orjson.dumps(payload)
        if self._take(("truncate",), methods) is not None:
            content = content[: len(content) // 2]
        return web.Response(body=content, content_type="application/json")

    def _garble_batch(self, answers: list[Json], methods: list[str]) -> list[Json]:
        for n, method in enumerate(methods):
            if self._take(("drop_item",), [method]) is not None:
                answers = answers[:n] + answers[n + 1 :]
                break
        return answers[::-1] if self.reversed_batches else answers

    async def _whole_request_faults(
        self, request: web.Request, items: list[Json]
    ) -> web.StreamResponse | None:
        methods = [str(item.get("method")) for item in items]
        if (rule := self._take_for("hold", items)) is not None:
            assert rule.gate is not None
            await rule.gate._pass()
        if (rule := self._take(("delay",), methods)) is not None:
            await asyncio.sleep(rule.seconds)
        rule = self._take(("drop", "http", "malformed"), methods)
        if rule is None:
            return None
        if rule.kind == "drop":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        if rule.kind == "malformed":
            return web.Response(status=200, body=rule.body, content_type="application/json")
        headers = {"Retry-After": rule.retry_after} if rule.retry_after is not None else {}
        return web.Response(status=rule.status, body=rule.body, headers=headers)

    async def _answer_items(self, items: list[Json]) -> list[Json]:
        """Answer each item: from a rule, from the lag model, or from upstream (one batch)."""
        lagging = self.lag_blocks and not (self.lag_every_other and self._balancer.random() < 0.5)
        if self.lag_only is not None and all(i.get("method") != self.lag_only for i in items):
            lagging = 0
        self.lagged_requests += 1 if lagging else 0
        head = await self._lagged_head() if lagging or self.frozen_at is not None else None
        answers: list[Json | None] = []
        forward: list[tuple[int, Json, Callable[[Json], Json]]] = []
        for n, item in enumerate(items):
            ready, item2, post = await self._prepare(item, head)
            answers.append(ready)
            if ready is None:
                forward.append((n, item2, post))
        if forward:
            upstream = await self._upstream([f[1] for f in forward])
            by_id = {a.get("id"): a for a in upstream}
            for n, item2, post in forward:
                answer = post(by_id.get(item2.get("id"), _err(item2, -32603, "no answer")))
                if item2.get("method") == "eth_getLogs":
                    answer = self._hide_logs(answer)
                answers[n] = answer
        return [a for a in answers if a is not None]

    async def _prepare(
        self, item: Json, head: int | None
    ) -> tuple[Json | None, Json, Callable[[Json], Json]]:
        """(a ready answer, or None and the item to forward with a post-processing step)."""
        method = str(item.get("method"))
        rule = self._take(("rpc_error",), [method])
        if rule is not None:
            return {"jsonrpc": "2.0", "id": item.get("id"), "error": rule.error}, item, _same
        if self._take(("null",), [method]) is not None:
            return {"jsonrpc": "2.0", "id": item.get("id"), "result": None}, item, _same
        if (rule := self._take(("result",), [method])) is not None:
            return {"jsonrpc": "2.0", "id": item.get("id"), "result": rule.result}, item, _same
        if method == "eth_getLogs" and (empty := await self._left_out(item)) is not None:
            return empty, item, _same
        pruned = self._pruned(item, method)
        if pruned is not None:
            return pruned, item, _same
        if method == "eth_getLogs":
            refused = self._cap(item)
            if refused is not None:
                return refused, item, _same
        if head is not None:
            return await self._lagging(item, method, head)
        return None, item, _same

    def _cap(self, item: Json) -> Json | None:
        flt = (item.get("params") or [{}])[0]
        try:
            start, end = int(flt["fromBlock"], 16), int(flt["toBlock"], 16)
        except (KeyError, TypeError, ValueError):
            return None
        for rule in self.rules:
            if (
                rule.kind == "cap"
                and rule.matches("eth_getLogs")
                and end - start + 1 > rule.max_blocks
            ):
                rule.use()
                text = rule.message.format(
                    max=rule.max_blocks,
                    start=start,
                    end=end,
                    ok_start_hex=hex(start),
                    ok_end_hex=hex(start + rule.max_blocks - 1),
                )
                error = dict(rule.error)
                error.update(
                    {"message": "rpc error", "data": text} if rule.in_data else {"message": text}
                )
                return {"jsonrpc": "2.0", "id": item.get("id"), "error": error}
        return None

    # -- the lagging replica -----------------------------------------------------------------

    async def _lagged_head(self) -> int:
        if self.frozen_at is not None:
            return self.frozen_at
        answer = await self._upstream([{"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber"}])
        return max(0, int(answer[0]["result"], 16) - self.lag_blocks)

    async def _lagging(
        self, item: Json, method: str, head: int
    ) -> tuple[Json | None, Json, Callable[[Json], Json]]:
        params = list(item.get("params") or [])
        ok = {"jsonrpc": "2.0", "id": item.get("id")}
        if method == "eth_blockNumber":
            return {**ok, "result": hex(head)}, item, _same
        if method == "eth_getBlockByNumber" and params:
            tag = params[0]
            if tag in ("latest", "pending"):
                return None, {**item, "params": [hex(head), *params[1:]]}, _same
            if isinstance(tag, str) and tag.startswith("0x") and int(tag, 16) > head:
                return {**ok, "result": None}, item, _same
        if method == "eth_getLogs" and params:
            return await self._lagging_logs(item, params[0], head)
        if method in ("eth_getBlockByHash", "eth_getTransactionReceipt"):
            return None, item, lambda a: _hide_above(a, head)
        return None, item, _same

    async def _lagging_logs(
        self, item: Json, flt: Json, head: int
    ) -> tuple[Json | None, Json, Callable[[Json], Json]]:
        ok = {"jsonrpc": "2.0", "id": item.get("id")}
        if "blockHash" in flt:
            block = await self._upstream(
                [
                    {
                        "jsonrpc": "2.0",
                        "id": 0,
                        "method": "eth_getBlockByHash",
                        "params": [flt["blockHash"], False],
                    }
                ]
            )
            result = block[0].get("result")
            if result is None or int(result["number"], 16) > head:
                return _err(item, -32000, "unknown block"), item, _same
            return None, item, _same
        start = _block_number(flt.get("fromBlock"), head)
        end = _block_number(flt.get("toBlock"), head)
        if start > head:
            return {**ok, "result": []}, item, _same
        flt2 = {**flt, "fromBlock": hex(start), "toBlock": hex(min(end, head))}
        return None, {**item, "params": [flt2]}, _same

    async def _upstream(self, items: list[Json]) -> list[Json]:
        assert self._session is not None
        async with self._session.post(
            self.upstream, data=orjson.dumps(items), headers={"Content-Type": "application/json"}
        ) as response:
            answer = orjson.loads(await response.read())
        return answer if isinstance(answer, list) else [answer]


def _same(answer: Json) -> Json:
    return answer


def _err(item: Json, code: int, message: str) -> Json:
    return {"jsonrpc": "2.0", "id": item.get("id"), "error": {"code": code, "message": message}}


def _block_number(tag: Any, head: int) -> int:
    if isinstance(tag, str) and tag.startswith("0x"):
        return int(tag, 16)
    return 0 if tag == "earliest" else head


def _hide_above(answer: Json, head: int) -> Json:
    """A block or receipt above the replica's head becomes ``null``."""
    result = answer.get("result")
    if isinstance(result, dict):
        number = result.get("number", result.get("blockNumber"))
        if isinstance(number, str) and int(number, 16) > head:
            return {**answer, "result": None}
    return answer


class ThreadedProxy:
    """A :class:`FaultProxy` on its own event loop in a daemon thread (for subprocess tests).

    ``with ThreadedProxy(upstream) as tp: tp.proxy.fail_http(...); run(tp.url)``.
    """

    def __init__(self, upstream: str) -> None:
        self.proxy = FaultProxy(upstream)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return self.proxy.url

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.proxy.start())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.proxy.stop())
        self._loop.close()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine of the proxy (``freeze``) on its loop, from the test's thread."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError("fault proxy did not start") from self._error

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

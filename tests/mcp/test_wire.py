"""A wire fuzzer against a live server: hypothesis makes the bytes, headers and JSON-RPC messages a careless or
hostile client could send to the MCP routes, and every answer must be a well-formed refusal or a valid answer.

The properties, for every input:
  - never a 5xx, never a hang (every request has a client timeout), never a dropped connection;
  - a refusal on an MCP route is a JSON-RPC error body: `jsonrpc` "2.0", an integer `error.code`, a message in
    the server's words (never a deserializer's: serde's "invalid type", "expected", "missing field", "unknown
    variant", "at line …" outside the server's own "not JSON at line L, column C"), and the request's `id`
    echoed when it had a valid one (a string or an integer), null otherwise;
  - an answer on Streamable HTTP answers the request's id; a tool call on a real tool is a result or a tool
    error naming what was wrong, never an internal error;
  - and after each test the server is alive (/healthz 200), has not panicked, and still serves a real MCP
    session (list_recipes).

Each test collects every violation it meets (the exact input and the answer) and fails once at its end, listing
them, so that one run shows all of them. Counts of cases and status codes are printed (run with -s to see them).
"""

from __future__ import annotations

import copy
import json
import math
import queue
import re
import socket
import threading
import time
import uuid
from collections import Counter
from urllib.parse import urljoin, urlparse

import anyio
import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ofmcp

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
PROTOCOL = "2025-11-25"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "wire-fuzz", "version": "0"}},
}
# A client bound for every request: a hang is a failure, not a stall.
TIMEOUT = httpx2.Timeout(10.0, read=20.0)

# What a deserializer says (copied from test_http.py's DESERIALIZER_WORDS, and extended): none of it may reach a
# client in a JSON-RPC error message.
DESERIALIZER_WORDS = ("invalid type", "missing field", "unknown variant", "expected value", "EOF while parsing",
                      "trailing characters", "fail to deserialize", "at line 1 column 2")
RPC_WORDS = (*DESERIALIZER_WORDS, "expected", "unknown field", "at line", "deserialize", "did not match any variant",
             "invalid value", "invalid length", "recursion limit")
# Tool errors are the server's own sentences ("memory_mb: expected a whole number, got a string"): only serde's
# phrasings are refused there.
TOOL_WORDS = (*DESERIALIZER_WORDS, "deserialize", "did not match any variant", "invalid value:",
              "invalid length", ", expected ", "recursion limit")
# The server's own position wording, which is allowed.
OWN_POSITION = re.compile(r"not JSON at line \d+, column \d+")
SERDE_POSITION = re.compile(r"at line \d+ column \d+")
INTERNAL = ("the server failed unexpectedly", "internal error", "Encounter an error", "panicked")

MCP_METHODS = ["initialize", "ping", "tools/list", "tools/call", "resources/read", "prompts/get", "logging/setLevel",
               "completion/complete", "resources/list", "resources/templates/list", "prompts/list",
               "resources/subscribe", "resources/unsubscribe", "notifications/initialized", "notifications/cancelled",
               "notifications/progress", "notifications/roots/list_changed"]
VERSIONS = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"]
LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
PROMPTS = ["build_server", "build_template", "test_latest_build", "show_test_results", "create_vm_from_latest_build",
           "configure_feature", "review_builds"]
URIS = ["build://0123456789ab", "build://0123456789ab/log", "test-run://x", "recipe://gxp-medtech", "vm://web-1",
        "file:///etc/passwd", "build://../../etc/passwd", "recipe://", "x"]

SETTINGS = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                                      HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                                                      HealthCheck.large_base_example])


# --------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def wire(of_bin, tmp_path_factory) -> ofmcp.Server:
    """A server of this module's own: the fuzz opens sessions by the hundred and must not share its fate."""
    root = tmp_path_factory.mktemp("wire")
    home = ofmcp.make_home(of_bin, root / "home")
    srv = ofmcp.Server.start(of_bin, home, root, extra_args=("--requests-per-minute", "0"))
    yield srv
    code = srv.stop()
    srv.kill()
    assert code is not None, f"openfactory serve did not exit within 10 s of SIGTERM after the fuzz\n{srv.stderr_tail()}"


def assert_still_serving(srv: ofmcp.Server) -> None:
    """Alive, never panicked, /healthz 200, and a real MCP session still gets list_recipes."""
    assert srv.proc.poll() is None, f"openfactory serve exited with {srv.proc.returncode}\n{srv.stderr_tail()}"

    async def check() -> None:
        assert await ofmcp.healthz(srv.base) == 200
        async with ofmcp.unwrapped(ofmcp.http_session("http", srv.base)) as session:
            listed = await ofmcp.ok(session, "list_recipes")
            assert listed["recipes"], listed

    anyio.run(check)
    stderr = srv.stderr_path.read_text(errors="replace")
    assert "panicked" not in stderr, "the server panicked:\n" + "\n".join(line for line in stderr.splitlines() if "panick" in line)[:3000]


# --------------------------------------------------------------------------- what serde_json reads


class NotJSON(ValueError):
    pass


def _float(text: str) -> float:
    f = float(text)
    if math.isinf(f):
        raise NotJSON(f"{text}: out of range")  # serde_json: "number out of range"
    return f


def _int(text: str):
    n = int(text)
    if text.startswith("-") and n == 0:
        return -0.0  # serde_json reads -0 as a float
    if -(2**63) <= n < 2**64:
        return n
    return _float(text)  # too big for i64/u64: serde_json reads a float


def _const(text: str):
    raise NotJSON(text)  # NaN, Infinity


def serde_loads(raw: bytes):
    """The value serde_json would read from `raw` (into a serde_json::Value, the last of repeated keys winning),
    or NotJSON where it would refuse: strict UTF-8, no NaN or infinities, numbers in range, no lone surrogates,
    at most 127 levels of nesting."""
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, parse_float=_float, parse_int=_int, parse_constant=_const)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise NotJSON(str(e)[:100]) from None
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (list, dict)) and depth >= 128:
            raise NotJSON("recursion limit")
        if isinstance(v, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in v):
            raise NotJSON("lone surrogate")
        if isinstance(v, dict):
            stack.extend((k, depth) for k in v)
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)
    return value


def valid_id(v) -> bool:
    return isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))


def expected_id(raw: bytes):
    """The id a refusal must echo: the request's, if it is a valid one; else null."""
    try:
        value = serde_loads(raw)
    except NotJSON:
        return None
    if isinstance(value, dict) and valid_id(value.get("id")):
        return value["id"]
    return None


def is_request(raw: bytes) -> bool:
    try:
        value = serde_loads(raw)
    except NotJSON:
        return False
    return isinstance(value, dict) and isinstance(value.get("method"), str) and valid_id(value.get("id"))


# --------------------------------------------------------------------------- checking answers


def words_in(message: str, words) -> list[str]:
    rest = OWN_POSITION.sub("", message)
    found = [w for w in words if w.lower() in rest.lower()]
    if SERDE_POSITION.search(rest):
        found.append(SERDE_POSITION.search(rest).group(0))
    return found


def rpc_error_problems(obj, want_id, check_id: bool = True) -> list[str]:
    """What is wrong with a JSON-RPC error object."""
    if not isinstance(obj, dict):
        return [f"the body is not a JSON object: {obj!r:.200}"]
    problems = []
    if obj.get("jsonrpc") != "2.0":
        problems.append(f"`jsonrpc` is {obj.get('jsonrpc')!r}, not \"2.0\"")
    error = obj.get("error")
    if not isinstance(error, dict):
        return problems + [f"no `error` object: {obj!r:.300}"]
    code = error.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        problems.append(f"`error.code` is not an integer: {code!r}")
    elif code == -32603:
        problems.append("an internal error (-32603)")
    message = error.get("message")
    if not isinstance(message, str) or not message.strip():
        problems.append(f"`error.message` is not a non-empty string: {message!r:.200}")
    else:
        if len(message) >= ofmcp.MAX_MESSAGE:
            problems.append(f"`error.message` is {len(message)} characters")
        hits = words_in(message, RPC_WORDS)
        if hits:
            problems.append(f"a deserializer's words {hits} in {message!r:.300}")
        if [w for w in INTERNAL if w.lower() in message.lower()]:
            problems.append(f"an internal failure's words in {message!r:.300}")
    if check_id and "id" not in obj:
        problems.append("no `id` in the error")
    elif check_id and obj.get("id") != want_id:
        problems.append(f"`id` is {obj.get('id')!r}, the request's is {want_id!r}")
    return problems


def sse_messages(text: str) -> list:
    """The JSON-RPC messages in an SSE body (events without data, such as the priming one, skipped)."""
    events = ofmcp.SseEvents()
    found = (events.feed(line.rstrip("\r")) for line in text.split("\n") + [""])
    return [json.loads(data) for _, data in filter(None, found) if data.strip()]


def answer_problems(raw: bytes, status: int, headers, text: str) -> list[str]:
    """What is wrong with the Streamable HTTP answer (`status`, `headers`, `text`) to the body `raw`."""
    want = expected_id(raw)
    ctype = headers.get("content-type", "")
    if status >= 500:
        return [f"HTTP {status}"]
    if status in (200, 201):
        try:
            messages = sse_messages(text) if ctype.startswith("text/event-stream") else [json.loads(text)]
        except ValueError:
            return [f"HTTP {status} with a body that is not JSON-RPC: {text[:300]!r}"]
        answers = [m for m in messages if isinstance(m, dict) and ("result" in m or "error" in m)]
        if not answers:
            return [f"HTTP {status} without an answer: {text[:300]!r}"]
        problems = []
        for m in messages:
            if not isinstance(m, dict) or m.get("jsonrpc") != "2.0":
                problems.append(f"not a JSON-RPC 2.0 message: {m!r:.300}")
        last = answers[-1]
        if "error" in last:
            problems += rpc_error_problems(last, want)
        elif last.get("id") != want:
            problems.append(f"the answer's id is {last.get('id')!r}, the request's {want!r}")
        return problems
    if status == 202:
        if is_request(raw):
            return ["HTTP 202 for a request: its answer is lost"]
        return []
    if 400 <= status < 500:
        if not ctype.startswith("application/json"):
            return [f"HTTP {status} with Content-Type {ctype!r}, not JSON: {text[:300]!r}"]
        try:
            body = json.loads(text)
        except ValueError:
            return [f"HTTP {status} body is not JSON: {text[:300]!r}"]
        return rpc_error_problems(body, want)
    return [f"unexpected HTTP {status}: {text[:300]!r}"]


class Findings:
    """Violations met during a test, by kind (the first few inputs of each kind kept)."""

    def __init__(self, what: str):
        self.what = what
        self.cases = 0
        self.statuses: Counter = Counter()
        self.kinds: dict[str, list[str]] = {}

    def add(self, problems: list[str], shown_input: str, shown_answer: str) -> None:
        for p in problems:
            kind = re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "…", p)[:160]
            seen = self.kinds.setdefault(kind, [])
            if len(seen) < 3:
                seen.append(f"{p}\n      input:  {shown_input[:400]}\n      answer: {shown_answer[:600]}")

    def report(self, extra: str = "") -> None:
        print(f"\nwire fuzz: {self.what}: {self.cases} cases, codes seen {dict(sorted(self.statuses.items(), key=lambda kv: str(kv[0])))}{extra}")

    def check(self) -> None:
        if self.kinds:
            lines = [f"{self.what}: {len(self.kinds)} kind(s) of violation in {self.cases} cases"]
            for kind, examples in self.kinds.items():
                lines.append(f"  * {kind}")
                lines += [f"    - {e}" for e in examples]
            raise AssertionError("\n".join(lines))


def shown(raw: bytes) -> str:
    return repr(raw[:300]) + (f"… ({len(raw)} bytes)" if len(raw) > 300 else "")


# --------------------------------------------------------------------------- strategies

ABSENT = object()
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=40))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                              st.dictionaries(st.text(max_size=12), inner, max_size=5)),
                           max_leaves=25)
ids = st.one_of(st.integers(-(2**70), 2**70), st.integers(-5, 1000), st.text(max_size=20), st.none(), st.booleans(),
                st.floats(allow_nan=False, allow_infinity=False), st.lists(scalars, max_size=3),
                st.dictionaries(st.text(max_size=5), scalars, max_size=3), st.just(ABSENT))
jsonrpcs = st.one_of(st.just("2.0"), st.just("2.0"), st.just("2.0"), st.sampled_from(["1.0", "2", "2.0 ", "", "3.0"]),
                     st.just(ABSENT), json_values)
methods = st.one_of(st.sampled_from(MCP_METHODS), st.sampled_from(MCP_METHODS), st.text(max_size=30), json_values)
versions = st.one_of(st.sampled_from(VERSIONS), st.text(max_size=12), json_values)


def opt(**fields):
    return st.fixed_dictionaries({}, optional=fields)


def params_for(method) -> st.SearchStrategy:
    """MCP-shaped params for `method`, their fields mutated, or any JSON at all."""
    anything = json_values
    shaped = {
        "initialize": opt(protocolVersion=versions, capabilities=st.one_of(st.just({}), json_values),
                          clientInfo=st.one_of(st.just({"name": "f", "version": "0"}), json_values), _meta=json_values),
        "tools/call": opt(name=st.one_of(st.sampled_from(sorted(ofmcp.TOOLS)), st.text(max_size=20), json_values),
                          arguments=st.one_of(st.dictionaries(st.text(max_size=12), json_values, max_size=4), json_values),
                          _meta=json_values, task=json_values),
        "resources/read": opt(uri=st.one_of(st.sampled_from(URIS), st.text(max_size=40), json_values), _meta=json_values),
        "resources/subscribe": opt(uri=st.one_of(st.sampled_from(URIS), json_values)),
        "prompts/get": opt(name=st.one_of(st.sampled_from(PROMPTS), st.text(max_size=20), json_values),
                           arguments=st.one_of(st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3), json_values)),
        "logging/setLevel": opt(level=st.one_of(st.sampled_from(LEVELS), st.text(max_size=10), json_values)),
        "completion/complete": opt(
            ref=st.one_of(st.fixed_dictionaries({"type": st.sampled_from(["ref/prompt", "ref/resource", "ref/x"])},
                                                optional={"name": st.one_of(st.sampled_from(PROMPTS), json_values),
                                                          "uri": st.one_of(st.sampled_from(URIS), json_values)}), json_values),
            argument=st.one_of(st.fixed_dictionaries({"name": st.text(max_size=10), "value": st.text(max_size=10)}), json_values),
            context=json_values),
        "notifications/cancelled": opt(requestId=ids.filter(lambda v: v is not ABSENT), reason=json_values),
        "notifications/progress": opt(progressToken=json_values, progress=json_values, total=json_values),
    }
    return st.one_of(shaped.get(method, anything), anything) if isinstance(method, str) else anything


@st.composite
def rpc_shaped(draw) -> dict:
    """A JSON-RPC message with its fields mutated: jsonrpc wrong or missing, an id of every JSON type, a known or
    random method with params of random shapes, now and then `result`/`error` and unknown keys."""
    message = {}
    for key, strategy in (("jsonrpc", jsonrpcs), ("id", ids)):
        v = draw(strategy)
        if v is not ABSENT:
            message[key] = v
    kind = draw(st.sampled_from(["call", "call", "call", "call", "answer", "neither"]))
    if kind == "call":
        method = draw(methods)
        message["method"] = method
        if draw(st.booleans()) or method in ("initialize", "tools/call"):
            message["params"] = draw(params_for(method))
    elif kind == "answer":
        if draw(st.booleans()):
            message["result"] = draw(json_values)
        if draw(st.booleans()):
            message["error"] = draw(st.one_of(json_values, opt(code=st.one_of(st.integers(-40000, 40000), json_values),
                                                               message=st.one_of(st.text(max_size=20), json_values),
                                                               data=json_values)))
    if draw(st.integers(0, 5)) == 0:
        message[draw(st.text(max_size=10))] = draw(json_values)
    return message


def encode(value, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


VALID_PARAMS = {
    "initialize": st.fixed_dictionaries({"protocolVersion": st.sampled_from(VERSIONS), "capabilities": st.just({}),
                                         "clientInfo": st.fixed_dictionaries({"name": st.text(max_size=10), "version": st.text(max_size=5)})}),
    "ping": st.just({}),
    "tools/list": opt(cursor=st.text(max_size=10)),
    "tools/call": st.fixed_dictionaries({"name": st.sampled_from(sorted(ofmcp.TOOLS)),
                                         "arguments": st.dictionaries(st.text(max_size=12), json_values, max_size=3)}),
    "resources/read": st.fixed_dictionaries({"uri": st.sampled_from(URIS)}),
    "resources/list": st.just({}),
    "resources/templates/list": st.just({}),
    "prompts/list": st.just({}),
    "prompts/get": st.fixed_dictionaries({"name": st.sampled_from(PROMPTS)},
                                         optional={"arguments": st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3)}),
    "logging/setLevel": st.fixed_dictionaries({"level": st.sampled_from(LEVELS)}),
    "completion/complete": st.fixed_dictionaries({
        "ref": st.one_of(st.fixed_dictionaries({"type": st.just("ref/prompt"), "name": st.sampled_from(PROMPTS)}),
                         st.fixed_dictionaries({"type": st.just("ref/resource"), "uri": st.sampled_from(URIS)})),
        "argument": st.fixed_dictionaries({"name": st.text(max_size=10), "value": st.text(max_size=10)})}),
    "resources/subscribe": st.fixed_dictionaries({"uri": st.sampled_from(URIS)}),
    "resources/unsubscribe": st.fixed_dictionaries({"uri": st.sampled_from(URIS)}),
    "notifications/initialized": st.just(ABSENT),
    "notifications/cancelled": st.fixed_dictionaries({"requestId": st.integers(0, 100)}, optional={"reason": st.text(max_size=10)}),
    "notifications/progress": st.fixed_dictionaries({"progressToken": st.one_of(st.text(max_size=5), st.integers(0, 9)),
                                                     "progress": st.integers(0, 100)}),
    "notifications/roots/list_changed": st.just(ABSENT),
}


STATELESS_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}


@st.composite
def mutated_messages(draw) -> dict:
    """A valid MCP message (a request, a notification, or an answer to a request the server never sent), then
    none to three mutations: a field given a value of another type, removed, added, or one of its params'."""
    kind = draw(st.sampled_from(["request"] * 6 + ["notification", "answer"]))
    if kind == "answer":
        message = {"jsonrpc": "2.0", "id": draw(st.one_of(st.integers(0, 10**6), st.text(max_size=8)))}
        if draw(st.booleans()):
            message["result"] = draw(st.one_of(st.just({}), st.dictionaries(st.text(max_size=8), json_values, max_size=3)))
        else:
            message["error"] = {"code": draw(st.integers(-33000, 1000)), "message": draw(st.text(max_size=20))}
    else:
        names = [m for m in MCP_METHODS if m.startswith("notifications/") == (kind == "notification")]
        method = draw(st.sampled_from(names))
        message = {"jsonrpc": "2.0", "method": method}
        if kind == "request":
            message["id"] = draw(st.one_of(st.integers(0, 2**63 - 1), st.text(max_size=12)))
        params = draw(VALID_PARAMS[method])
        if kind == "request" and draw(st.booleans()):
            # What a 2026-07-28 (stateless) request carries.
            params = {**({} if params is ABSENT else params), "_meta": dict(STATELESS_META)}
        if params is not ABSENT:
            message["params"] = params
    message = copy.deepcopy(message)  # st.just values are shared between examples: never mutate them
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 1, 2, 3]))):
        what = draw(st.sampled_from(["set", "set", "delete", "add", "param set", "param delete"]))
        if what in ("set", "delete") and message:
            key = draw(st.sampled_from(sorted(message)))
            if what == "delete":
                del message[key]
            else:
                message[key] = draw(ids if key == "id" else methods if key == "method" else jsonrpcs if key == "jsonrpc" else json_values)
                if message[key] is ABSENT:
                    del message[key]
        elif what == "add":
            message[draw(st.sampled_from(["params", "result", "error", "id", "method", "_meta", "extra"]))] = draw(json_values)
        elif isinstance(message.get("params"), dict):
            if what == "param set" or not message["params"]:
                keys = sorted(message["params"]) + ["_meta", "name", "arguments", "uri", "cursor"]
                message["params"][draw(st.sampled_from(keys))] = draw(json_values)
            else:
                del message["params"][draw(st.sampled_from(sorted(message["params"])))]
    return message


rpc_bodies = st.builds(encode, st.one_of(mutated_messages(), mutated_messages(), mutated_messages(), rpc_shaped()), st.booleans())
json_bodies = st.builds(encode, json_values, st.booleans())
byte_bodies = st.one_of(st.binary(max_size=600), st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")))


@st.composite
def deep_bodies(draw) -> bytes:
    """Deep nesting, alone or as a tool argument: up to 20,000 levels, closed or not."""
    n = draw(st.one_of(st.integers(1, 200), st.integers(100, 140), st.sampled_from([127, 128, 129, 10_000, 20_000])))
    kind = draw(st.sampled_from(["array", "object", "mixed"]))
    if kind == "array":
        nested = "[" * n + "]" * n
    elif kind == "object":
        nested = '{"a":' * n + "1" + "}" * n
    else:
        nested = '[{"a":' * (n // 2) + "null" + "}]" * (n // 2)
    if not draw(st.booleans()):
        nested = nested[: len(nested) // 2]  # cut off
    where = draw(st.sampled_from(["bare", "params", "argument", "id"]))
    if where == "bare":
        text = nested
    elif where == "params":
        text = '{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"_meta":' + nested + "}}"
    elif where == "id":
        text = '{"jsonrpc":"2.0","id":' + nested + ',"method":"ping"}'
    else:
        text = '{"jsonrpc":"2.0","id":"deep","method":"tools/call","params":{"name":"validate_recipe","arguments":{"recipe":' + nested + "}}}"
    return text.encode()


BAD_UTF8 = [b"\xff", b"\xfe", b"\x80", b"\xc0\x80", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80",
            b"\xf8\x88\x80\x80\x80", b"\xef\xbb\xbf"]


@st.composite
def bad_utf8_bodies(draw) -> bytes:
    """A JSON-RPC message with invalid UTF-8 (or an escaped lone surrogate) inside one of its strings."""
    field = draw(st.sampled_from(["method", "id", "name", "arg", "key"]))
    junk = draw(st.one_of(st.sampled_from(BAD_UTF8), st.binary(min_size=1, max_size=8).filter(lambda b: not _utf8(b)),
                          st.sampled_from([b"\\ud800", b"\\udfff", b"\\ud83d", b"\\ud800\\ud800"])))
    pre, post = draw(st.text(max_size=8)).encode(), draw(st.text(max_size=8)).encode()
    s = b'"' + pre.replace(b"\\", b"").replace(b'"', b"") + junk + post.replace(b"\\", b"").replace(b'"', b"") + b'"'
    if field == "method":
        return b'{"jsonrpc":"2.0","id":3,"method":' + s + b"}"
    if field == "id":
        return b'{"jsonrpc":"2.0","id":' + s + b',"method":"ping"}'
    if field == "key":
        return b'{"jsonrpc":"2.0","id":4,"method":"ping",' + s + b":1}"
    if field == "name":
        return b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":' + s + b"}}"
    return b'{"jsonrpc":"2.0","id":"u","method":"tools/call","params":{"name":"get_recipe","arguments":{"recipe_id":' + s + b"}}}"


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@st.composite
def duplicate_key_bodies(draw) -> bytes:
    """Objects whose keys repeat (jsonrpc, id, method, params, twice or more), written out by hand."""
    pairs = draw(st.lists(st.tuples(st.sampled_from(["jsonrpc", "id", "method", "params", "result", "error"]),
                                    st.one_of(st.just("2.0"), st.sampled_from(MCP_METHODS), ids.filter(lambda v: v is not ABSENT),
                                              st.just({}), st.just({"name": "list_recipes"}),
                                              st.just({"protocolVersion": PROTOCOL, "capabilities": {},
                                                       "clientInfo": {"name": "d", "version": "0"}}))),
                          min_size=2, max_size=10))
    return ("{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}").encode()


all_bodies = st.one_of(rpc_bodies, rpc_bodies, rpc_bodies, rpc_bodies, json_bodies, byte_bodies, deep_bodies(), bad_utf8_bodies(),
                       duplicate_key_bodies())


# --------------------------------------------------------------------------- sessions


def open_session(client: httpx2.Client, base: str) -> str:
    """A real Streamable HTTP session (initialize, notifications/initialized); its Mcp-Session-Id."""
    r = client.post(f"{base}/api/mcp", json=INITIALIZE, headers=MCP_HEADERS)
    assert r.status_code == 200, r.text[:300]
    sid = r.headers["mcp-session-id"]
    h = {**MCP_HEADERS, "Mcp-Session-Id": sid, "Mcp-Protocol-Version": PROTOCOL}
    r = client.post(f"{base}/api/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=h)
    assert r.status_code == 202, r.text[:300]
    return sid


def session_headers(sid: str) -> dict:
    return {**MCP_HEADERS, "Mcp-Session-Id": sid, "Mcp-Protocol-Version": PROTOCOL}


# --------------------------------------------------------------------------- 1. Streamable HTTP bodies


@pytest.mark.deadline(150)
def test_streamable_http_answers_every_body_with_a_json_rpc_refusal_or_an_answer(wire):
    findings = Findings("streamable http bodies")
    started = time.monotonic()
    with httpx2.Client(trust_env=False, timeout=TIMEOUT) as client:
        sid = open_session(client, wire.base)
        modes = {
            "no session": MCP_HEADERS,
            "session": session_headers(sid),
            "stateless 2026-07-28": {**MCP_HEADERS, "Mcp-Protocol-Version": "2026-07-28"},
        }
        per_mode: Counter = Counter()
        refusals: Counter = Counter()

        def post(raw: bytes, mode: str, method_header: bool = False) -> None:
            findings.cases += 1
            headers = modes[mode]
            if method_header:
                # The 2026-07-28 header that names the method, when the body has a known one.
                try:
                    method = serde_loads(raw).get("method")
                except (NotJSON, AttributeError):
                    method = None
                if method in MCP_METHODS:
                    headers = {**headers, "Mcp-Method": method}
            try:
                r = client.post(f"{wire.base}/api/mcp", content=raw, headers=headers)
            except httpx2.TransportError as e:
                findings.statuses["no answer"] += 1
                findings.add([f"no answer: {type(e).__name__}: {e}"], f"[{mode}] {shown(raw)}", "")
                return
            findings.statuses[r.status_code] += 1
            per_mode[f"{mode}: {r.status_code}"] += 1
            if r.status_code == 400 and r.headers.get("content-type", "").startswith("application/json"):
                try:
                    said = r.json()["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    said = "?"
                refusals[f"{mode}: " + re.sub(r"`[^`]*`|\d+", "…", str(said))[:70]] += 1
            problems = answer_problems(raw, r.status_code, r.headers, r.text)
            findings.add(problems, f"[{mode}{' + Mcp-Method' if headers is not modes[mode] else ''}] {shown(raw)}",
                         f"HTTP {r.status_code} {r.headers.get('content-type')} {r.text[:500]!r}")

        mode_names = st.sampled_from(["no session", "session", "session", "stateless 2026-07-28"])

        # MCP messages a field or two away from valid, which get past the shape checks into rmcp and the tools…
        @settings(max_examples=1300, **SETTINGS)
        @given(raw=rpc_bodies, mode=mode_names, method_header=st.booleans())
        def fuzz_messages(raw, mode, method_header):
            post(raw, mode, method_header and mode.startswith("stateless"))

        # …and anything at all: bytes, JSON values, deep nesting, invalid UTF-8, repeated keys.
        @settings(max_examples=1100, **SETTINGS)
        @given(raw=all_bodies, mode=mode_names, method_header=st.booleans())
        def fuzz_anything(raw, mode, method_header):
            post(raw, mode, method_header and mode.startswith("stateless"))

        fuzz_messages()
        fuzz_anything()
        # The named edge cases, whatever hypothesis drew: 10,000 levels, a repeated key, invalid UTF-8 in a string.
        for raw in (b"[" * 10_000 + b"]" * 10_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000, b"[" * 10_000,
                    b'{"jsonrpc":"2.0","id":"deep","method":"tools/call","params":{"name":"validate_recipe","arguments":{"recipe":'
                    + b"[" * 10_000 + b"]" * 10_000 + b"}}}",
                    b'{"jsonrpc":"2.0","id":1,"id":2,"method":"ping","method":"ping"}',
                    b'{"jsonrpc":"1.0","jsonrpc":"2.0","id":"x","method":"nosuch","method":"ping"}',
                    b'{"jsonrpc":"2.0","id":9,"method":"pi\xffng"}', b'{"jsonrpc":"2.0","id":"\xed\xa0\x80","method":"ping"}',
                    b'{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}', b'{"jsonrpc":"2.0","id":1e400,"method":"ping"}',
                    b'{"jsonrpc":"2.0","id":18446744073709551616,"method":"ping"}', b'{"jsonrpc":"2.0","id":-0,"method":"ping"}',
                    b'{"jsonrpc":"2.0","id":NaN,"method":"ping"}', b"", b"null", b"\xef\xbb\xbf{}",
                    b'{"jsonrpc":"2.0","id":"m","method":""}', b'{"jsonrpc":"2.0","id":"r","result":{}}',
                    b'{"jsonrpc":"2.0","method":"notifications/initialized"}'):
            for mode in modes:
                post(raw, mode)
        # The session still answers on its own id after all of that.
        r = client.post(f"{wire.base}/api/mcp", json={"jsonrpc": "2.0", "id": "after", "method": "ping"}, headers=modes["session"])
        findings.add(answer_problems(b'{"jsonrpc":"2.0","id":"after","method":"ping"}', r.status_code, r.headers, r.text)
                     + ([] if r.status_code == 200 else [f"the fuzzed session no longer answers a ping: HTTP {r.status_code}"]),
                     "[session] a ping after the fuzz", f"HTTP {r.status_code} {r.text[:300]!r}")
    findings.report(f", per mode and code {dict(sorted(per_mode.items()))}, {time.monotonic() - started:.1f} s;"
                    f" most frequent refusals: {refusals.most_common(12)}")
    assert_still_serving(wire)
    findings.check()


# --------------------------------------------------------------------------- 1b. tool calls inside a session


def tool_schemas(client: httpx2.Client, base: str, sid: str) -> dict[str, dict]:
    r = client.post(f"{base}/api/mcp", json={"jsonrpc": "2.0", "id": "tools", "method": "tools/list"}, headers=session_headers(sid))
    tools = sse_messages(r.text)[-1]["result"]["tools"]
    return {t["name"]: t.get("inputSchema") or {} for t in tools}


hostile_strings = st.one_of(st.text(max_size=30), st.sampled_from(["", " ", "../../etc/passwd", "0123456789ab", "x" * 5000,
                                                                   "$(reboot)", "a\u0000b", "\u202e", "-1", "1e30", "null"]))
argument_values = st.one_of(json_values, hostile_strings, st.integers(-(2**64), 2**64),
                            st.sampled_from([0, -1, 1, 2**31, 2**53 + 1, 1e30, -1e30, 0.5, True, False, None, [], {}]))


def names_a_field(text: str, tool: str, schema: dict, args: dict) -> bool:
    """A tool error says what was wrong: `field: …`, a field or argument name, or the object it did not find."""
    props = set((schema.get("properties") or {}).keys()) | {k for k in args if isinstance(k, str) and k.strip()}
    if re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\[\d+\]|\.[A-Za-z_][A-Za-z0-9_]*)*: ", text):
        return True
    if "not found" in text or "no such" in text.lower():
        return True
    return any(re.search(rf"(^|[^A-Za-z0-9_]){re.escape(p)}([^A-Za-z0-9_]|$)", text) for p in props if len(p) > 1)


@pytest.mark.deadline(120)
def test_tool_calls_with_random_arguments_are_results_or_tool_errors_that_name_a_field(wire):
    findings = Findings("tool calls in a session")
    started = time.monotonic()
    texts: Counter = Counter()
    with httpx2.Client(trust_env=False, timeout=TIMEOUT) as client:
        sid = open_session(client, wire.base)
        schemas = tool_schemas(client, wire.base, sid)
        assert set(schemas) == ofmcp.TOOLS, sorted(schemas)
        headers = session_headers(sid)
        n = iter(range(10**9))

        @st.composite
        def calls(draw):
            tool = draw(st.sampled_from(sorted(ofmcp.TOOLS)))
            props = sorted((schemas[tool].get("properties") or {}).keys())
            args = {}
            if props:
                for p in draw(st.lists(st.sampled_from(props), unique=True, max_size=len(props))):
                    args[p] = draw(argument_values)
            args.update(draw(st.dictionaries(st.text(max_size=12), argument_values, max_size=2)))
            return tool, args

        def one(tool: str, args: dict) -> None:
            findings.cases += 1
            rid = next(n)
            raw = json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": tool, "arguments": args}}).encode()
            try:
                r = client.post(f"{wire.base}/api/mcp", content=raw, headers=headers)
            except httpx2.TransportError as e:
                findings.statuses["no answer"] += 1
                findings.add([f"no answer: {type(e).__name__}: {e}"], shown(raw), "")
                return
            findings.statuses[r.status_code] += 1
            answer = f"HTTP {r.status_code} {r.text[:600]!r}"
            problems = answer_problems(raw, r.status_code, r.headers, r.text)
            if problems or r.status_code != 200:
                findings.add(problems or [f"HTTP {r.status_code} for a tool call"], shown(raw), answer)
                return
            last = [m for m in sse_messages(r.text) if "result" in m or "error" in m][-1]
            if "error" in last:
                findings.statuses["json-rpc error"] += 1
                findings.add([f"a tool call on `{tool}` answered with a protocol error, not a tool result: {last['error']}"], shown(raw), answer)
                return
            result = last["result"]
            text = "\n".join(c.get("text", "") for c in result.get("content") or [] if isinstance(c, dict))
            if result.get("isError"):
                findings.statuses["tool error"] += 1
                texts[re.sub(r"`[^`]*`", "`…`", text)[:80]] += 1
                problems = []
                if not text.strip():
                    problems.append("a tool error without text")
                if len(text) >= ofmcp.MAX_MESSAGE:
                    problems.append(f"a tool error of {len(text)} characters")
                if [w for w in INTERNAL if w.lower() in text.lower()]:
                    problems.append(f"an internal failure: {text[:300]!r}")
                hits = words_in(text, TOOL_WORDS)
                if hits:
                    problems.append(f"a deserializer's words {hits} in {text[:300]!r}")
                if text.strip() and not names_a_field(text, tool, schemas[tool], args):
                    problems.append(f"a tool error that names no field of `{tool}`: {text[:300]!r}")
                findings.add(problems, shown(raw), answer)
            else:
                findings.statuses["result"] += 1
                if not isinstance(result.get("structuredContent"), dict) and not text:
                    findings.add([f"a result of `{tool}` with neither structuredContent nor text"], shown(raw), answer)

        @settings(max_examples=1400, **SETTINGS)
        @given(call=calls())
        def fuzz(call):
            one(*call)

        fuzz()
        # Many mistakes at once: the error still says what is wrong in a bounded text.
        for tool, args in (("create_build", {"recipe": {f"field_{i}": i for i in range(30)}}),
                           ("create_build", {"recipe": {"name": "many-1", "base_image": "debian-bookworm", "packages": ["$(x)"] * 50}}),
                           ("create_vm", {f"k{i}": i for i in range(200)}),
                           ("get_recipe", {"recipe_id": "r" * 100_000}),
                           ("list_builds", {"limit": 10**30, "status": ["x"] * 1000})):
            one(tool, args)
    findings.report(f", {time.monotonic() - started:.1f} s; most frequent tool errors: {texts.most_common(6)}")
    assert_still_serving(wire)
    findings.check()


# --------------------------------------------------------------------------- 2. legacy SSE


async def sse_lines(response: httpx2.Response):
    """The lines of an SSE stream, split where SSE splits them (CR, LF, CRLF) and nowhere else: JSON text may
    hold U+2028 or U+0085 raw, where str.splitlines (and so httpx's aiter_lines) would cut a line."""
    buffer = ""
    async for text in response.aiter_text():
        buffer += text
        held = buffer.endswith("\r")  # perhaps the first half of a CRLF: decided with the next chunk
        parts = re.split(r"\r\n|\r|\n", buffer[:-1] if held else buffer)
        buffer = parts.pop() + ("\r" if held else "")
        for line in parts:
            yield line
    for line in re.split(r"\r\n|\r|\n", buffer) if buffer else []:
        yield line


class Stream:
    """A raw legacy SSE stream read by a thread of its own (its own event loop), events queued."""

    def __init__(self, base: str):
        self.base = base
        self.events: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        self.status: int | None = None
        self.thread = threading.Thread(target=lambda: anyio.run(self._read), daemon=True)
        self.thread.start()

    async def _read(self) -> None:
        try:
            async with httpx2.AsyncClient(trust_env=False, timeout=httpx2.Timeout(10.0, read=None)) as c:
                async with c.stream("GET", f"{self.base}/api/mcp/sse", headers={"Accept": "text/event-stream"}) as r:
                    self.status = r.status_code
                    async with anyio.create_task_group() as tg:

                        async def stopper() -> None:
                            while not self.stop.is_set():
                                await anyio.sleep(0.05)
                            tg.cancel_scope.cancel()

                        tg.start_soon(stopper)
                        events = ofmcp.SseEvents()
                        async for line in sse_lines(r):
                            if done := events.feed(line):
                                self.events.put(done)
                        self.events.put(("closed", "the stream ended"))
                        tg.cancel_scope.cancel()
        except Exception as e:  # noqa: BLE001 - reported as an event
            self.events.put(("closed", f"{type(e).__name__}: {e}"))

    def next(self, timeout: float = 10.0) -> tuple[str, str]:
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


@pytest.mark.deadline(120)
def test_legacy_sse_sessions_survive_fuzzed_posts_and_still_answer_a_ping(wire):
    findings = Findings("legacy sse posts")
    started = time.monotonic()
    stream = Stream(wire.base)
    try:
        event, data = stream.next()
        assert stream.status == 200 and event == "endpoint", (stream.status, event, data)
        endpoint = urljoin(f"{wire.base}/api/mcp/sse", data)
        assert urlparse(endpoint).path == "/api/mcp/messages", endpoint
        with httpx2.Client(trust_env=False, timeout=TIMEOUT) as client:
            r = client.post(endpoint, json=INITIALIZE)
            assert r.status_code == 202, r.text[:300]
            event, data = stream.next()
            assert event == "message" and json.loads(data)["id"] == 1, (event, data)
            r = client.post(endpoint, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
            assert r.status_code == 202, r.text[:300]

            def post(raw: bytes) -> None:
                findings.cases += 1
                try:
                    r = client.post(endpoint, content=raw, headers={"Content-Type": "application/json"})
                except httpx2.TransportError as e:
                    findings.statuses["no answer"] += 1
                    findings.add([f"no answer: {type(e).__name__}: {e}"], shown(raw), "")
                    return
                findings.statuses[r.status_code] += 1
                answer = f"HTTP {r.status_code} {r.headers.get('content-type')} {r.text[:500]!r}"
                if r.status_code == 202:
                    return
                if r.status_code == 404:
                    findings.add(["the session was lost (404) during the fuzz"], shown(raw), answer)
                    return
                if not 400 <= r.status_code < 500:
                    findings.add([f"HTTP {r.status_code}: only 202 or a 4xx refusal is right"], shown(raw), answer)
                    return
                if not r.headers.get("content-type", "").startswith("application/json"):
                    findings.add([f"HTTP {r.status_code} refusal is not JSON"], shown(raw), answer)
                    return
                findings.add(rpc_error_problems(r.json(), expected_id(raw)), shown(raw), answer)

            @settings(max_examples=1400, **SETTINGS)
            @given(raw=st.one_of(rpc_bodies, all_bodies))
            def fuzz(raw):
                post(raw)

            fuzz()
            # The named ones, whatever hypothesis drew (their answers, if any, come on the stream).
            for raw in (b'{"jsonrpc":"2.0","id":"empty-method","method":""}', b'{"jsonrpc":"2.0","id":"r","result":{}}',
                        b'{"jsonrpc":"2.0","id":"e","error":{"code":1,"message":"x"}}', b"[" * 10_000, b"\xff",
                        b'{"jsonrpc":"2.0","id":"c","method":"notifications/cancelled","params":{"requestId":"nope"}}',
                        json.dumps(INITIALIZE).encode()):
                post(raw)

            # Everything the stream carried is JSON-RPC; its errors are in the server's words. Then a ping.
            ping = f"final-ping-{uuid.uuid4().hex[:8]}"
            r = client.post(endpoint, json={"jsonrpc": "2.0", "id": ping, "method": "ping"})
            if r.status_code != 202:
                findings.add([f"the final ping was refused: HTTP {r.status_code}"], "ping", r.text[:300])
            carried = 0
            deadline = time.monotonic() + 20
            answered = False
            while time.monotonic() < deadline and not answered:
                try:
                    event, data = stream.next(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if event == "closed":
                    findings.add([f"the SSE stream closed during the fuzz: {data}"], "(stream)", data)
                    break
                carried += 1
                try:
                    message = json.loads(data)
                except ValueError:
                    findings.add(["a stream event that is not JSON"], "(stream)", data[:300])
                    continue
                if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
                    findings.add(["a stream event that is not JSON-RPC 2.0"], "(stream)", data[:300])
                elif "error" in message:
                    findings.add(rpc_error_problems(message, message.get("id"), check_id=False), "(stream)", data[:300])
                if isinstance(message, dict) and message.get("id") == ping:
                    answered = "result" in message
            if not answered:
                findings.add(["the stream did not answer a valid ping after the fuzz"], "ping", "")
    finally:
        stream.close()
    findings.report(f", {carried} messages on the stream, {time.monotonic() - started:.1f} s")
    assert_still_serving(wire)
    findings.check()


# --------------------------------------------------------------------------- 3. big bodies


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


TEN_MB = 10 * 1000 * 1000


@pytest.mark.deadline(120)
def test_ten_megabyte_bodies_are_413_json_rpc_errors_and_cost_no_memory(wire):
    findings = Findings("big bodies")
    started = time.monotonic()
    prefix = (b'{"jsonrpc":"2.0","id":"big","method":"tools/call","params":{"name":"validate_recipe","arguments":'
              b'{"recipe":{"name":"big-1","base_image":"debian-bookworm","description":"')
    padded = prefix + b"a" * (TEN_MB - len(prefix) - 6) + b'"}}}}'
    brackets = b"[" * TEN_MB

    def chunks(body: bytes):
        for i in range(0, len(body), 1 << 20):
            yield body[i : i + (1 << 20)]

    stream = Stream(wire.base)
    try:
        event, data = stream.next()
        assert event == "endpoint", (event, data)
        messages = urljoin(f"{wire.base}/api/mcp/sse", data)
        with httpx2.Client(trust_env=False, timeout=httpx2.Timeout(30.0)) as client:
            cases = [
                ("json prefix + padding", f"{wire.base}/api/mcp", lambda: padded),
                ("[ x 10 MB", f"{wire.base}/api/mcp", lambda: brackets),
                ("json prefix + padding, chunked", f"{wire.base}/api/mcp", lambda: chunks(padded)),
                ("[ x 10 MB, chunked", f"{wire.base}/api/mcp", lambda: chunks(brackets)),
                ("json prefix + padding, legacy messages", messages, lambda: padded),
                ("[ x 10 MB, chunked, legacy messages", messages, lambda: chunks(brackets)),
            ]

            def send(name: str, url: str, body) -> None:
                findings.cases += 1
                try:
                    r = client.post(url, content=body(), headers=MCP_HEADERS)
                except httpx2.TransportError as e:
                    findings.statuses["no answer"] += 1
                    findings.add([f"no answer: {type(e).__name__}: {e}"], name, "")
                    return
                findings.statuses[r.status_code] += 1
                answer = f"HTTP {r.status_code} {r.headers.get('content-type')} {r.text[:300]!r}"
                if r.status_code != 413:
                    findings.add([f"HTTP {r.status_code}, not 413"], f"{name} → {urlparse(url).path}", answer)
                    return
                if not r.headers.get("content-type", "").startswith("application/json"):
                    findings.add(["a 413 that is not a JSON-RPC error"], f"{name} → {urlparse(url).path}", answer)
                    return
                problems = rpc_error_problems(r.json(), None, check_id=False)
                if "too large" not in r.text:
                    problems.append("the 413 does not say the message is too large")
                findings.add(problems, f"{name} → {urlparse(url).path}", answer)
                # The connection the 413 came on: closed with `Connection: close` said, or still good for the next request.
                if r.headers.get("connection", "").lower() != "close":
                    try:
                        after = client.get(f"{wire.base}/healthz")
                        findings.statuses[f"next {after.status_code}"] += 1
                    except httpx2.TransportError as e:
                        findings.statuses["next dropped"] += 1
                        findings.add([f"the connection a 413 came on (without `Connection: close`) was dropped: the next request on it "
                                      f"got {type(e).__name__}: {e}"], f"{name} → {urlparse(url).path}, then GET /healthz", answer)

            # Warm up (buffers the allocator keeps), then 20 more, and the RSS may grow by 50 MB at most.
            for name, url, body in cases[:4]:
                send(name, url, body)
            before = rss_kib(wire.proc.pid)
            for i in range(20):
                send(*cases[i % len(cases)])
            after = rss_kib(wire.proc.pid)
    finally:
        stream.close()
    grown_mb = (after - before) / 1024
    findings.report(f", RSS {before / 1024:.0f} MB → {after / 1024:.0f} MB ({grown_mb:+.1f} MB), {time.monotonic() - started:.1f} s")
    if grown_mb > 50:
        findings.add([f"RSS grew by {grown_mb:.0f} MB after 20 bodies of 10 MB"], "20 × 10 MB", f"{before} kB → {after} kB")
    assert_still_serving(wire)
    findings.check()


# --------------------------------------------------------------------------- 4. header abuse


def raw_request(port: int, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"",
                timeout: float = 10.0) -> tuple[int | None, dict[str, str], bytes, str]:
    """One HTTP/1.1 request on a fresh connection, byte for byte as given (Content-Length and Connection: close
    added): status, headers (lower-case names), body (de-chunked), and what went wrong, if anything."""
    head = f"{method} {path} HTTP/1.1\r\n".encode()
    head += b"".join(k + b": " + v + b"\r\n" for k, v in headers)
    if body or method == "POST":
        head += b"Content-Length: " + str(len(body)).encode() + b"\r\n"
    head += b"Connection: close\r\n\r\n"
    data, trouble = b"", ""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(head + body)
        except OSError as e:
            trouble = f"send: {e}"  # the server may answer before reading everything (431): read what it said
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() > deadline:
                return None, {}, data, "no complete answer within the timeout"
            try:
                chunk = s.recv(1 << 16)
            except socket.timeout:
                return None, {}, data, "no answer within the timeout"
            except OSError as e:
                if data:
                    break
                return None, {}, data, f"recv: {e} ({trouble})"
            if not chunk:
                break
            data += chunk
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.split(b"\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", lines[0])
    if not m:
        return None, {}, data, f"not an HTTP answer ({trouble})"
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        hdrs[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size.split(b";")[0] or b"0", 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2 :]
        rest = out
    return int(m.group(1)), hdrs, rest, trouble


def host_allowed(host: bytes) -> bool:
    try:
        h = host.decode("ascii").strip()
    except UnicodeDecodeError:
        return False
    if h.startswith("["):
        name = h[1:].split("]")[0]
    else:
        name, _, port = h.rpartition(":")
        if not (port.isdigit() and ":" not in name and name):
            name = h
    return name.lower() in ("localhost", "127.0.0.1", "::1")


# A visible-ASCII value, or one with obs-text (bytes 0x80-0xff), never CR, LF or NUL; no surrounding blanks.
header_bytes = st.binary(min_size=1, max_size=200).map(lambda b: bytes(c for c in b if c >= 0x21 and c != 0x7F)).filter(bool)
header_values = st.one_of(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=80).map(str.encode),
                          header_bytes, st.sampled_from([b"a" * 10_240, b"\xff" * 1024, b"x" * 65_536, b"\x80abc", b"-",
                                                         b"2025-11-25\xff", b"0" * 128]))
bearers = st.one_of(
    st.builds(lambda scheme, token: scheme + token,
              st.sampled_from([b"Bearer ", b"bearer ", b"BEARER ", b"Bearer  ", b"Basic ", b"Token ", b"", b"Bearer\t"]),
              st.one_of(header_values, st.builds(lambda p, t: p + t, st.sampled_from([b"of_mcp_", b"of_oat_", b"of_"]), header_values),
                        st.just(b"of_mcp_" + b"0" * 64), st.just(b"of_oat_" + b"f" * 200))),
    header_values)


@pytest.mark.deadline(150)
def test_header_abuse_gets_4xx_json_rpc_refusals_never_5xx(wire):
    findings = Findings("header abuse")
    started = time.monotonic()
    port = wire.port
    host = [(b"Host", f"127.0.0.1:{port}".encode())]
    accept = [(b"Accept", b"application/json, text/event-stream")]
    ctype = [(b"Content-Type", b"application/json")]
    ok = host + accept + ctype
    init = json.dumps(INITIALIZE).encode()
    tools_list = b'{"jsonrpc":"2.0","id":"tl","method":"tools/list"}'
    with httpx2.Client(trust_env=False, timeout=TIMEOUT) as client:
        sid = open_session(client, wire.base).encode()

    def case(name: str, headers, body: bytes = init, path: str = "/api/mcp", method: str = "POST", refusal: bool = True) -> None:
        """`refusal`: the request is wrong, so a 4xx is the only right answer (else a valid answer may come too)."""
        findings.cases += 1
        status, hdrs, payload, trouble = raw_request(port, method, path, headers, body)
        findings.statuses[status if status is not None else "no answer"] += 1
        shown_in = f"{name}: {method} {path} headers {[(k, v[:80] + (b'...' if len(v) > 80 else b'')) for k, v in headers[:6]]}" \
                   f"{f' +{len(headers) - 6} more' if len(headers) > 6 else ''} body {body[:80]!r}"
        answer = f"HTTP {status} {hdrs.get('content-type')} {payload[:400]!r} {trouble}"
        if status is None:
            findings.add([f"no answer: {trouble}"], shown_in, answer)
            return
        if status >= 500:
            findings.add([f"HTTP {status}"], shown_in, answer)
            return
        if refusal and not 400 <= status < 500:
            findings.add([f"HTTP {status} for a request that is wrong: a 4xx is the right answer"], shown_in, answer)
            return
        if not 400 <= status < 500:
            return
        # A refusal at the HTTP level (hyper's 431, or 400 for a header it cannot read) has no body to speak of.
        if status in (400, 431) and not payload and "content-type" not in hdrs:
            return
        if not path.startswith("/api/mcp"):
            return
        if not hdrs.get("content-type", "").startswith("application/json"):
            findings.add([f"HTTP {status} on an MCP route with Content-Type {hdrs.get('content-type')!r}, not a JSON-RPC error"],
                         shown_in, answer)
            return
        try:
            obj = json.loads(payload)
        except ValueError:
            findings.add([f"HTTP {status} body is not JSON"], shown_in, answer)
            return
        # An id is only known once the body was read; refusals that come before it (Host, credentials) say null.
        want = expected_id(body) if method == "POST" else None
        problems = rpc_error_problems(obj, want, check_id=obj.get("id") is not None or want is None)
        findings.add(problems, shown_in, answer)

    # The named cases.
    case("a valid initialize (control)", ok, refusal=False)
    case("no Content-Type", host + accept)
    case("Content-Type text/plain", host + accept + [(b"Content-Type", b"text/plain")])
    case("Content-Type application/x-www-form-urlencoded", host + accept + [(b"Content-Type", b"application/x-www-form-urlencoded")])
    case("Content-Type with obs-text", host + accept + [(b"Content-Type", b"application/\xffjson")])
    case("no Accept", host + ctype)
    case("Accept text/html", host + [(b"Accept", b"text/html")] + ctype)
    case("Accept application/json only", host + [(b"Accept", b"application/json")] + ctype)
    case("Accept */*", host + [(b"Accept", b"*/*")] + ctype)
    case("a 64 KiB junk header on a valid request", ok + [(b"X-Junk", b"j" * 65_536)], refusal=False)
    case("a 64 KiB Mcp-Session-Id", ok + [(b"Mcp-Session-Id", b"s" * 65_536)], body=tools_list)
    case("a 64 KiB Authorization", ok + [(b"Authorization", b"Bearer " + b"t" * 65_536)])
    case("a 64 KiB Accept", host + [(b"Accept", b"text/plain, " * 5_000)] + ctype)
    case("a 64 KiB Host", [(b"Host", b"h" * 65_536)] + accept + ctype)
    case("8 MiB of headers", ok + [(b"X-Junk-%d" % i, b"j" * 65_536) for i in range(128)])
    case("1,000 headers", ok + [(b"X-Many-%d" % i, b"v") for i in range(1000)])
    case("1,000 headers on the SSE stream", host + [(b"Accept", b"text/event-stream")] + [(b"X-Many-%d" % i, b"v") for i in range(1000)],
         body=b"", path="/api/mcp/sse", method="GET")
    case("obs-text in a junk header on a valid request", ok + [(b"X-Junk", b"\x80\xff\xfe caf\xe9")], refusal=False)
    case("obs-text in Accept", host + [(b"Accept", b"application/json\xff, text/event-stream\xff")] + ctype)
    case("obs-text Mcp-Session-Id on tools/list", ok + [(b"Mcp-Session-Id", b"\xff\x80abc")], body=tools_list)
    case("obs-text Mcp-Session-Id on initialize", ok + [(b"Mcp-Session-Id", b"\xff\x80abc")])
    case("a bogus Mcp-Session-Id on initialize", ok + [(b"Mcp-Session-Id", b"no-such-session")])
    case("a 10 KiB Mcp-Session-Id on tools/list", ok + [(b"Mcp-Session-Id", b"a" * 10_240)], body=tools_list)
    case("Mcp-Protocol-Version garbage in a live session", ok + [(b"Mcp-Session-Id", sid), (b"Mcp-Protocol-Version", b"garbage")],
         body=tools_list)
    case("Mcp-Protocol-Version obs-text in a live session", ok + [(b"Mcp-Session-Id", sid), (b"Mcp-Protocol-Version", b"2025-11-25\xff")],
         body=tools_list)
    case("a 2 KiB Mcp-Protocol-Version in a live session", ok + [(b"Mcp-Session-Id", sid), (b"Mcp-Protocol-Version", b"v" * 2048)],
         body=tools_list)
    case("a 5 KiB Mcp-Protocol-Version in a live session", ok + [(b"Mcp-Session-Id", sid), (b"Mcp-Protocol-Version", b"v" * 5000)],
         body=tools_list)
    case("Mcp-Protocol-Version contradicting initialize", ok + [(b"Mcp-Protocol-Version", b"2024-11-05")])
    case("Host evil.example", [(b"Host", b"evil.example")] + accept + ctype)
    case("no Host", accept + ctype)
    case("Host with obs-text", [(b"Host", b"127.0.0.1\xff")] + accept + ctype)
    case("two Hosts", host + [(b"Host", b"evil.example")] + accept + ctype)
    case("Host evil.example on the SSE stream", [(b"Host", b"evil.example"), (b"Accept", b"text/event-stream")], body=b"",
         path="/api/mcp/sse", method="GET")
    case("Host evil.example on the messages URL", [(b"Host", b"evil.example")] + ctype, path="/api/mcp/messages?sessionId=x")
    case("Authorization Bearer garbage", ok + [(b"Authorization", b"Bearer garbage")])
    case("Authorization Bearer of_mcp_ garbage", ok + [(b"Authorization", b"Bearer of_mcp_" + b"0" * 64)])
    case("Authorization Bearer of_oat_ garbage", ok + [(b"Authorization", b"Bearer of_oat_" + b"0" * 64)])
    case("Authorization Basic", ok + [(b"Authorization", b"Basic dXNlcjpwYXNz")])
    case("Authorization obs-text", ok + [(b"Authorization", b"Bearer of_mcp_\xff\xfe")])
    case("Authorization on the SSE stream", host + [(b"Accept", b"text/event-stream"), (b"Authorization", b"Bearer of_mcp_nope")],
         body=b"", path="/api/mcp/sse", method="GET")
    case("Authorization on the messages URL", host + ctype + [(b"Authorization", b"Bearer of_mcp_nope")],
         path="/api/mcp/messages?sessionId=x")
    case("messages URL without sessionId", host + ctype, path="/api/mcp/messages")
    case("messages URL with a bogus sessionId", host + ctype, path="/api/mcp/messages?sessionId=" + "z" * 2000)
    case("a header name that is not a token", ok + [(b"X Bad", b"v")])
    case("a header without a colon's value", ok + [(b"X-Empty", b"")], refusal=False)

    # And hypothesis: each header the server reads, garbage in it, on an otherwise valid request.
    @settings(max_examples=1200, **SETTINGS)
    @given(which=st.sampled_from(["session", "protocol", "authorization", "content-type", "accept", "host", "session-initialize"]),
           value=header_values, bearer=bearers)
    def fuzz(which, value, bearer):
        if which == "session":
            case("a bogus Mcp-Session-Id", ok + [(b"Mcp-Session-Id", value)], body=tools_list, refusal=value != sid)
        elif which == "session-initialize":
            case("a bogus Mcp-Session-Id on initialize", ok + [(b"Mcp-Session-Id", value)], refusal=value != sid)
        elif which == "protocol":
            case("Mcp-Protocol-Version garbage", ok + [(b"Mcp-Session-Id", sid), (b"Mcp-Protocol-Version", value)], body=tools_list,
                 refusal=value.strip().decode("latin-1") not in VERSIONS)
        elif which == "authorization":
            case("Authorization garbage", ok + [(b"Authorization", bearer)])
        elif which == "content-type":
            valid = value.split(b";")[0].strip().lower() == b"application/json"
            case("Content-Type garbage", host + accept + [(b"Content-Type", value)], refusal=not valid)
        elif which == "accept":
            low = value.lower()
            valid = b"application/json" in low and b"text/event-stream" in low
            case("Accept garbage", host + [(b"Accept", value)] + ctype, refusal=not valid)
        else:
            case("Host garbage", [(b"Host", value)] + accept + ctype, refusal=not host_allowed(value))

    fuzz()
    findings.report(f", {time.monotonic() - started:.1f} s")
    assert_still_serving(wire)
    findings.check()

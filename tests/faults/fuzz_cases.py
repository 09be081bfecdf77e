"""Hypothesis strategies for the fuzzer: webhook calls, /v1 and ops calls, and raw bytes on a socket.

A case says what to send and how it is meant (right token or not, a correct signature or not), so the
runner can tell which answer the README promises. Secrets and signatures are filled in when sending.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from receiver.providers import PROVIDER_NAMES, WEBHOOK_PROVIDERS


@dataclass(frozen=True)
class WebhookCase:
    provider: str
    token: str  # right | encoded (%74oken=) | missing | wrong | empty | twice (wrong, then right)
    body: bytes
    signature: str  # correct | none | garbage
    garbage: str = ""
    headers: dict[str, bytes] = field(default_factory=dict)
    chunked: bool = False


@dataclass(frozen=True)
class ApiCase:
    method: str
    path: str  # may hold `{job}`: replaced by a job id the run has seen, or by `job_text`
    job: int | None  # index into the ids seen so far; None: use `job_text`
    job_text: str
    query: list[tuple[str, str]]
    auth: str  # right | lower-scheme | none | wrong | basic | bearer-empty | right-plus-junk
    body: bytes | None
    headers: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class RawCase:
    data: bytes


Case = WebhookCase | ApiCase | RawCase

# -- building blocks -------------------------------------------------------------------------------

_leaves = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
)
json_values = st.recursive(
    _leaves,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
urlish = st.sampled_from(
    [
        "https://cdn.example/out.png",
        "https://cdn.example/out.jpeg?X-Amz-Signature=abc",
        "http://[",
        "http://[::1",
        "https://x/%zz.webp",
        "",
        " ",
        "ftp://x/y.jpeg",
        "https://x/" + "a" * 3000,
        "data:image/png;base64,AAAA",
        "//x",
        "http://h:99999/x.png",
        "https://ex.ample/\x00.png",
        "https://例え.jp/画像.png",
    ]
) | st.text(max_size=40)
ids = st.text(max_size=24) | st.integers() | st.sampled_from(["", " ", "x" * 600, "job_0", "\u0000"]) | json_values


def _opt(**fields: Any) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


def _one_or_list(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return s | st.lists(s, max_size=3) | json_values


pixazo_body = _opt(
    request_id=ids,
    status=st.sampled_from(["COMPLETED", "FAILED", "ERROR", "QUEUED", "PROCESSING", "completed", "nope"]) | json_values,
    output=_opt(media_url=_one_or_list(urlish), media_type=st.text(max_size=12) | json_values) | json_values,
    error=json_values,
    message=json_values,
    model_id=st.text(max_size=12),
)
runware_body = _opt(
    data=st.lists(
        _opt(
            taskUUID=ids,
            imageURL=urlish,
            imageUUID=ids,
            outputFormat=st.sampled_from(["PNG", "jpg", "WEBP", ""]) | ids,
            status=st.sampled_from(["success", "error", "processing", "pending", ""]) | json_values,
            error=json_values,
            message=json_values,
        )
        | json_values,
        max_size=3,
    )
    | json_values,
    errors=st.lists(_opt(taskUUID=ids, message=json_values, code=json_values) | json_values, max_size=2) | json_values,
)
apiframe_body = _opt(
    jobId=ids,
    id=ids,
    event=st.sampled_from(["completed", "failed", "progress", "COMPLETED", "other"]) | json_values,
    status=st.sampled_from(["COMPLETED", "FAILED", "CANCELLED", "QUEUED", "canceled", "x"]) | json_values,
    result=_one_or_list(urlish),
    error=json_values,
    progress=json_values,
)
lumenfall_body = _opt(
    type=st.sampled_from(["video.completed", "video.failed", "video.cancelled", "video.progress", ""]) | json_values,
    data=_opt(id=ids, status=json_values, output=_opt(url=urlish) | json_values, error=json_values) | json_values,
)
_SHAPED = {"pixazo": pixazo_body, "runware": runware_body, "apiframe": apiframe_body, "lumenfall": lumenfall_body}

# Well-formed completions with generated ids and URLs, so that many webhooks reach the store and apply.
_job_ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF), min_size=1, max_size=20)
_urls = st.builds(
    "https://cdn.example/{}.{}".format,
    _job_ids.map(lambda t: quote(t, safe="")),
    st.sampled_from(["png", "jpeg", "webp", "bin"]),
)
_WELL_FORMED = {
    "pixazo": st.builds(
        lambda i, u, failed: (
            {"request_id": i, "status": "FAILED", "error": "nsfw"}
            if failed
            else {"request_id": i, "status": "COMPLETED", "output": {"media_url": [u]}}
        ),
        _job_ids,
        _urls,
        st.booleans(),
    ),
    "runware": st.builds(
        lambda i, u, k: {"data": [{"taskUUID": i, "imageURL": u, "imageUUID": k}]}, _job_ids, _urls, _job_ids
    ),
    "apiframe": st.builds(
        lambda i, u, e: {"jobId": i, "event": e, "result": u, "error": "failed"},
        _job_ids,
        _urls,
        st.sampled_from(["completed", "failed", "progress"]),
    ),
    "lumenfall": st.builds(
        lambda i, u, t: {"type": t, "data": {"id": i, "output": {"url": u}}},
        _job_ids,
        _urls,
        st.sampled_from(["video.completed", "video.failed", "video.cancelled"]),
    ),
}

# Bodies that once broke a JSON decoder or encoder somewhere: nesting past the recursion limit,
# integers past Python's 4300-digit limit, NaN and Infinity, a BOM, UTF-16, lone surrogates.
nasty = st.sampled_from(
    [
        b"[" * 1000 + b"]" * 1000,
        b'{"request_id": "deep", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"a":' * 5000 + b"1" + b"}" * 5000,
        b'{"request_id": ' + b"9" * 5000 + b', "status": "COMPLETED"}',
        b'{"request_id": "nan", "status": "COMPLETED", "output": {"media_url": ["https://x/a.png"]}, "n": NaN}',
        b'{"request_id": 1e999, "status": "FAILED"}',
        b'\xef\xbb\xbf{"request_id": "bom", "status": "FAILED"}',
        '{"request_id": "utf16", "status": "FAILED"}'.encode("utf-16"),
        b'{"request_id": "\\ud800", "status": "FAILED", "error": "\\udfff"}',
        b'{"request_id": "dup", "request_id": "dup2", "status": "FAILED"}',
        b"\x00" * 64,
        b"null",
        b"[]",
        b'""',
        b"{}",
        b" ",
        b"",
    ]
)


def _encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def bodies(provider: str) -> st.SearchStrategy[bytes]:
    shaped = _SHAPED.get(provider, pixazo_body)
    well_formed = _WELL_FORMED.get(provider, _WELL_FORMED["pixazo"])
    return (
        well_formed.map(_encode)
        | well_formed.map(_encode)
        | shaped.map(_encode)
        | json_values.map(_encode)
        | st.binary(max_size=300)
        | nasty
    )


header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60)
header_names = st.sampled_from(
    [
        "content-type",
        "user-agent",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "x-webhook-signature",
        "x-webhook-event",
        "content-encoding",
        "x-forwarded-for",
        "x-forwarded-proto",
        "cookie",
        "accept",
        "last-event-id",
        "idempotency-key",
        "authorization",
    ]
) | st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True).filter(
    lambda n: n.lower() not in ("content-length", "transfer-encoding", "host", "connection", "expect", "upgrade")
)
headers = st.dictionaries(header_names, header_values.map(lambda v: v.encode("latin-1")), max_size=4)

# -- webhook calls ---------------------------------------------------------------------------------


@st.composite
def webhook_cases(draw: st.DrawFn) -> WebhookCase:
    known = draw(st.sampled_from([True] * 9 + [False]))
    provider = draw(
        st.sampled_from(WEBHOOK_PROVIDERS)
        if known
        else (
            st.sampled_from(["oxen", "PIXAZO", "", "..", "pixazo%00"])
            | st.text(
                st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/?#%"),
                min_size=1,
                max_size=10,
            )
        )
    )
    return WebhookCase(
        provider=provider,
        token=draw(st.sampled_from(["right"] * 6 + ["encoded", "missing", "wrong", "empty", "twice"])),
        body=draw(bodies(provider)),
        signature=draw(st.sampled_from(["correct"] * 4 + ["none", "garbage"])),
        garbage=draw(st.text(max_size=80)),
        headers=draw(headers),
        chunked=draw(st.booleans()),
    )


# -- /v1 and ops calls -----------------------------------------------------------------------------

_PATHS = [
    "/v1/jobs",
    "/v1/jobs/{job}",
    "/v1/jobs/{job}/deliveries",
    "/v1/jobs/{job}/redeliver",
    "/v1/receipts",
    "/v1/events",
    "/v1/generations",
    "/metrics",
    "/healthz",
    "/readyz",
    "/",
    "/v1",
    "/v1/",
    "/v1/jobs/",
    "//v1//jobs",
    "/webhooks",
    "/webhooks/pixazo",
]
_QUERY_KEYS = ["provider", "status", "limit", "cursor", "wait", "outcome", "last_event_id", "token"]
_QUERY_VALUES = [
    "",
    "0",
    "-1",
    "50",
    "500",
    "501",
    "99999999999999999999999",
    "9223372036854775807",
    "9223372036854775808",
    "²",
    "٣",
    "1e400",
    "nan",
    "inf",
    "0.05",
    " 7",
    "pixazo",
    "oxen",
    "PIXAZO",
    "pending",
    "succeeded",
    "applied",
    "invalid",
    "\x00",
    "%",
]
callback_urls = (
    st.sampled_from(
        [
            "http://127.0.0.1:9/hook",
            "http://[",
            "ftp://127.0.0.1/x",
            "http://127.0.0.1:99999/x",
            "http://",
            "http://127.0.0.1:9/\x00",
            "https://127.0.0.1:9/" + "p" * 3000,
            "",
        ]
    )
    | st.none()
    | json_values
)
register_body = _opt(
    provider=st.sampled_from([*PROVIDER_NAMES, "PIXAZO"]) | json_values,
    provider_job_id=ids,
    callback_url=callback_urls,
    metadata=json_values,
    expected_outputs=st.integers() | json_values,
    extra=json_values,
)
generation_body = _opt(
    provider=st.sampled_from(PROVIDER_NAMES) | json_values,
    prompt=st.text(max_size=40) | json_values,
    model=st.text(max_size=20) | json_values,
    input_image=urlish | json_values,
    params=json_values,
    callback_url=callback_urls,
    metadata=json_values,
)


@st.composite
def api_cases(draw: st.DrawFn) -> ApiCase:
    path = draw(
        st.sampled_from(_PATHS)
        if draw(st.sampled_from([True] * 4 + [False]))
        else st.lists(st.text(max_size=10), max_size=4).map(
            lambda parts: "/" + "/".join(quote(p, safe="") for p in parts)
        )
    )
    body = draw(
        st.none()
        | register_body.map(_encode)
        | generation_body.map(_encode)
        | json_values.map(_encode)
        | st.binary(max_size=200)
        | nasty
    )
    query = draw(
        st.lists(
            st.tuples(
                st.sampled_from(_QUERY_KEYS) | st.text(max_size=6),
                st.sampled_from(_QUERY_VALUES) | st.text(max_size=12),
            ),
            max_size=4,
        )
    )
    return ApiCase(
        # Methods HTTP does not define are refused by uvicorn's parser (400) before the app: a few suffice.
        method=draw(
            st.sampled_from(["GET", "GET", "POST", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
            if draw(st.sampled_from([True] * 19 + [False]))
            else st.from_regex(r"[A-Z]{1,10}", fullmatch=True)
        ),
        path=path,
        job=draw(
            st.integers(min_value=0, max_value=10**6) if draw(st.sampled_from([True] * 3 + [False])) else st.none()
        ),
        job_text=quote(draw(st.text(max_size=40)), safe=""),
        query=query,
        auth=draw(
            st.sampled_from(
                ["right"] * 5 + ["lower-scheme", "none", "wrong", "basic", "bearer-empty", "right-plus-junk"]
            )
        ),
        body=body,
        headers=draw(headers),
    )


well_formed_register = st.builds(
    lambda provider, job_id, metadata, url: {
        "provider": provider,
        "provider_job_id": job_id,
        "metadata": metadata,
        "callback_url": url,
    },
    st.sampled_from(PROVIDER_NAMES),
    _job_ids,
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    st.sampled_from([None, "http://127.0.0.1:9/hook"]),
)


@st.composite
def body_cases(draw: st.DrawFn) -> ApiCase:
    """Authorized POSTs to the two routes that take a body: the validation of every field."""
    path, shaped = draw(
        st.sampled_from(
            [("/v1/jobs", register_body), ("/v1/jobs", well_formed_register), ("/v1/generations", generation_body)]
        )
    )
    body = draw(shaped.map(_encode) | shaped.map(_encode) | json_values.map(_encode) | nasty)
    return ApiCase("POST", path, None, "", [], "right", body, draw(headers))


# -- raw bytes -------------------------------------------------------------------------------------

_request_line = st.tuples(
    st.sampled_from([b"GET", b"POST", b"PUT", b"", b"G\x00T", b"POST POST"]) | st.binary(max_size=8),
    st.sampled_from([b"/webhooks/pixazo?token=", b"/v1/jobs", b"/", b"*", b"http://x/v1/jobs", b""])
    | st.binary(max_size=30),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"HTTP/9.9", b"", b"http/1.1"]),
)
_raw_header = st.sampled_from(
    [
        b"Content-Length: 5",
        b"Content-Length: -1",
        b"Content-Length: 99999999999999999999",
        b"Content-Length: 1, 2",
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: gzip, chunked",
        b"Host:",
        b"Host: a\x00b",
        b": empty-name",
        b"X-Folded: a\r\n b",
        b"Authorization: Bearer",
        b"Expect: 100-continue",
        b"Connection: upgrade",
        b"Upgrade: websocket",
        b"X-" + b"a" * 9000 + b": b",
    ]
) | st.binary(max_size=40)


@st.composite
def raw_cases(draw: st.DrawFn) -> RawCase:
    if draw(st.booleans()):
        return RawCase(draw(st.binary(max_size=400)))
    method, target, version = draw(_request_line)
    lines = draw(st.lists(_raw_header, max_size=5))
    body = draw(st.binary(max_size=100) | st.sampled_from([b"0\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n"]))
    return RawCase(
        method + b" " + target + b" " + version + b"\r\n" + b"".join(h + b"\r\n" for h in lines) + b"\r\n" + body
    )


cases = webhook_cases() | webhook_cases() | api_cases() | body_cases() | raw_cases()

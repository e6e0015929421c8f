"""What every metrics provider shares: the Protocol, a guarded HTTP GET, number checks.

The HTTP GET is where the limits live: connect/read timeouts, an overall deadline per poll (a
server that drips one byte at a time defeats a read timeout), a cap on the response size (counted
after decompression, read as a stream), redirects followed only within the same origin, TLS
verification on, and a bearer token that never appears in a message or a repr.
"""
from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urljoin, urlsplit

from ..errors import MetricsError
from ..observation import Reading

if TYPE_CHECKING:  # annotations only: httpx is imported when a provider first reads
    import httpx

DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_BYTES = 1_048_576
MAX_REDIRECTS = 3


class Provider(Protocol):
    """A source of per-version cumulative counters for one model.

    A provider may also have `read_many(requests, *, time_left)` answering several models at
    once (`read_batch` uses it; the answer per model is what `read` would return, or the exception).
    """

    name: str

    def read(self, model: str, versions: Sequence[str], since_seconds: float, *,
             time_left: float | None = None) -> dict[str, Reading]:
        """One Reading per version that answered; MetricsError when the source fails as a whole.

        `since_seconds` is the canary's age (for `{since}` in PromQL templates); `time_left` caps
        the whole read (watch passes what is left of --max-duration).
        """
        ...


@dataclass(frozen=True)
class ReadRequest:
    """One model's share of a batched read: the versions to read and its canary's age."""

    model: str
    versions: tuple[str, ...]
    since_seconds: float


# per model: its readings, or the exception that made its read fail as a whole
BatchAnswer = dict[str, "dict[str, Reading] | Exception"]


def read_batch(provider: Provider, requests: Sequence[ReadRequest], *,
               time_left: float | None = None) -> BatchAnswer:
    """Read several models at once: the provider's `read_many` when it has one, else one `read` each.

    Never raises: a failure is the answer of the models it concerns (`watch --all` must outlive it).
    """
    many = getattr(provider, "read_many", None)
    if many is not None and len(requests) > 0:
        try:
            answer: BatchAnswer = many(requests, time_left=time_left)
            return answer
        except Exception as exc:  # noqa: BLE001 - a watchdog must outlive any bad answer
            return {r.model: exc for r in requests}
    return read_each(provider, requests, time_left=time_left)


def read_each(provider: Provider, requests: Sequence[ReadRequest], *, time_left: float | None = None) -> BatchAnswer:
    """One `read` per model; a model whose read fails gets its exception as its answer."""
    out: BatchAnswer = {}
    for r in requests:
        try:
            out[r.model] = provider.read(r.model, list(r.versions), r.since_seconds, time_left=time_left)
        except Exception as exc:  # noqa: BLE001 - one model's failure is that model's error poll
            out[r.model] = exc
    return out


@dataclass(frozen=True)
class HttpLimits:
    """Timeouts and size cap for one provider's requests."""

    timeout: float = DEFAULT_TIMEOUT  # seconds, connect and per read
    deadline: float | None = None  # seconds for a whole poll; None -> 2 * timeout
    max_bytes: int = DEFAULT_MAX_BYTES

    @property
    def poll_deadline(self) -> float:
        """Seconds a whole poll may take."""
        return self.deadline if self.deadline is not None else 2 * self.timeout


def where(url: str) -> str:
    """The URL as it may appear in a message: no credentials, no query string."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def _one_line(text: object, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@functools.lru_cache(maxsize=1)
def _tls_context() -> Any:
    """httpx's verifying TLS context, built once (building it costs tens of ms per poll)."""
    import httpx

    return httpx.create_ssl_context()


class HttpSession:
    """One poll's worth of GETs sharing a connection pool and a deadline; use as a context manager."""

    def __init__(self, limits: HttpLimits, token: str | None = None,
                 monotonic: Callable[[], float] = time.monotonic, time_left: float | None = None) -> None:
        self._limits = limits
        self._token = token
        self._monotonic = monotonic
        self._client: httpx.Client | None = None
        self._deadline_at = 0.0
        # a watch near its --max-duration gets only what is left (issue 11: a slow server must
        # not carry a watch far past its bound)
        budget = limits.poll_deadline
        if time_left is not None:
            budget = max(0.001, min(budget, time_left))
        self._budget = budget

    def __repr__(self) -> str:
        return f"HttpSession(limits={self._limits!r}, token={'set' if self._token else 'none'})"

    def __enter__(self) -> HttpSession:
        import httpx  # lazily: watch is the only command that needs it

        headers = {"Accept": "application/json", "Accept-Encoding": "gzip, deflate", "User-Agent": "modelctl"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        self._client = httpx.Client(headers=headers, verify=_tls_context(), follow_redirects=False)
        self._deadline_at = self._monotonic() + self._budget
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _remaining(self, url: str) -> float:
        left = self._deadline_at - self._monotonic()
        if left <= 0:
            raise self._late(url)
        return left

    def _late(self, url: str) -> MetricsError:
        return MetricsError(
            f"metrics endpoint {where(url)} gave no complete answer within {self._budget:.3g}s",
            hint="check the endpoint, or raise metrics.deadline",
        )

    def get(self, url: str, params: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """GET url; return (status, body) of the final response, or raise MetricsError."""
        import httpx

        assert self._client is not None, "use HttpSession as a context manager"
        start = url
        for _hop in range(MAX_REDIRECTS + 1):
            status, location, body = self._get_once(httpx, self._client, url, params)
            if location is None:
                return status, body
            target = urljoin(url, location)
            if _origin(target) != _origin(start):
                raise MetricsError(
                    f"metrics endpoint {where(start)} redirects to another host ({where(target)}); refusing",
                    hint="configure metrics.url with the final address",
                )
            url = target
        raise MetricsError(f"metrics endpoint {where(start)} redirects more than {MAX_REDIRECTS} times")

    def _get_once(self, httpx: Any, client: httpx.Client, url: str,
                  params: Mapping[str, str] | None) -> tuple[int, str | None, bytes]:
        timeout = min(self._limits.timeout, self._remaining(url))
        try:
            with client.stream(
                "GET", url, params=params,
                timeout=httpx.Timeout(timeout, connect=timeout, read=timeout),
            ) as response:
                if response.is_redirect:
                    return response.status_code, response.headers.get("location", ""), b""
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > self._limits.max_bytes:
                    raise self._too_big(url)
                chunks: list[bytes] = []
                size = 0
                for chunk in _decoded(response.iter_raw(), response.headers.get("content-encoding"), url):
                    size += len(chunk)
                    if size > self._limits.max_bytes:
                        raise self._too_big(url)
                    chunks.append(chunk)
                    self._remaining(url)
                return response.status_code, None, b"".join(chunks)
        except MetricsError:
            raise
        except httpx.ConnectTimeout:
            raise MetricsError(f"connecting to metrics endpoint {where(url)} timed out after {timeout:.3g}s") from None
        except httpx.TimeoutException:
            if self._deadline_at - self._monotonic() <= 0:
                raise self._late(url) from None  # the deadline is what ran out
            raise MetricsError(f"metrics endpoint {where(url)} did not answer within {timeout:.3g}s") from None
        except httpx.ConnectError as exc:
            raise MetricsError(
                f"cannot connect to metrics endpoint {where(url)} ({_one_line(exc)})",
                hint="check metrics.url (or --url) and that the endpoint is up",
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
            raise MetricsError(
                f"metrics endpoint {where(url)} failed: {type(exc).__name__}: {_one_line(exc)}"
            ) from None

    def _too_big(self, url: str) -> MetricsError:
        return MetricsError(
            f"metrics endpoint {where(url)} answered with more than {self._limits.max_bytes} bytes; refusing",
            hint="narrow the query, or raise metrics.max_bytes",
        )


_DECODE_STEP = 65536  # bytes of decompressed output per step: memory stays flat whatever the ratio


def _decoded(raw: Iterable[bytes], encoding: str | None, url: str) -> Iterator[bytes]:
    """The body as a stream of decompressed chunks of at most _DECODE_STEP bytes each.

    httpx's own decoder inflates a whole network chunk at once (a 64 KiB gzip bomb chunk becomes
    64 MiB in memory before the size cap can look at it); here zlib's max_length bounds each step,
    so the cap is checked every 64 KiB of output.
    """
    import zlib

    name = (encoding or "identity").strip().lower()
    if name in ("", "identity"):
        yield from raw
        return
    if name in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif name == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise MetricsError(f"metrics endpoint {where(url)} answered with content-encoding {name[:20]!r}, "
                           "which modelctl does not read", hint="serve the response plain or gzip-compressed")
    decoder = zlib.decompressobj(wbits)
    try:
        for chunk in raw:
            data = chunk
            while data:
                out = decoder.decompress(data, _DECODE_STEP)
                if out:
                    yield out
                data = decoder.unconsumed_tail
        tail = decoder.flush()
        if tail:
            yield tail
    except zlib.error as exc:
        raise MetricsError(f"metrics endpoint {where(url)} sent a corrupt {name} body ({exc})") from None


def parse_json(body: bytes, url: str) -> Any:
    """Decode a JSON body, or raise MetricsError naming the endpoint."""
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        snippet = _one_line(body[:80].decode("utf-8", "replace"), 60)
        raise MetricsError(f"metrics endpoint {where(url)} answered with invalid JSON ({snippet!r})") from None


def number_problem(value: Any) -> str | None:
    """Why a value cannot be a metric figure (None when it can)."""
    if value is None:
        return "missing"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        text = repr(value)
        return f"not a number ({text if len(text) <= 40 else text[:37] + '...'})"
    if not math.isfinite(value):
        return f"{value!r}"
    if value < 0:
        return f"negative ({value!r})"
    return None

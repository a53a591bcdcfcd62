"""Decision records: one JSON line per scored application, on its own logger.

Each line holds `time` (UTC, when the batch was scored), `request_id` (the client's X-Request-ID,
else one the service made; echoed in the answer's X-Request-ID header), `uuid`, `model_tag`,
`input_sha256` and `input` (the canonical application input, `credit_pd.replay.canonical_input`),
`pd`, `grade`, `reasons` (the codes, ranked) and `max_reasons` (the request option the reasons were
cut to, so replay can cut them the same way). `python -m credit_pd.replay RECORDS.jsonl` proves
every line again from the model store.

The logger (`credit_pd.decisions`, not propagated to the root logger) writes to stdout by default:
the Kubernetes convention, where the cluster's log pipeline ships container output to storage;
`decision_records_path` writes to a file instead (appending, one line per write).

**The records are personal data.** The input is a customer's credit file: store and retain the
records under the lender's GDPR basis and retention rules. `decision_records_include_input: false`
writes `input: null` and keeps only `input_sha256`, which still proves which input was scored when
matched against the lender's own copy of the application (it is pseudonymised, not anonymous,
data); such records cannot be re-scored by replay on their own.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import io
import logging
import os
import re
import select
import stat
import sys
import uuid as uuid_module
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from credit_pd.features import values_getter
from credit_pd.replay import InputCanonicaliser
from credit_pd.schema import DatasetSchema

DECISION_LOGGER = "credit_pd.decisions"
# The request id of the HTTP request being validated (set by RequestIdMiddleware; read when an
# application is validated, which happens in the request's own task, before the batcher merges it).
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("credit_pd_request_id", default=None)
# A client's X-Request-ID is kept when it is a plausible id; anything else is replaced, so a
# header cannot inject text into the records.
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RequestIdMiddleware:
    """ASGI middleware: every HTTP request gets an id, in the context and in the X-Request-ID answer header."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _client_request_id(scope) or uuid_module.uuid4().hex
        token = current_request_id.set(request_id)
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*[h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"], header],
                }
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)


def _client_request_id(scope: dict) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == b"x-request-id":
            text = value.decode("latin-1")
            return text if REQUEST_ID_PATTERN.match(text) else None
    return None


def decision_handler(path: Path | None) -> logging.Handler:
    """stdout, or a file appended to (WatchedFileHandler: reopens after logrotate moves it)."""
    from logging.handlers import WatchedFileHandler

    handler: logging.Handler = (
        logging.StreamHandler(sys.stdout) if path is None else WatchedFileHandler(path, encoding="utf-8")
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


class DecisionRecorder:
    """Writes one record per scored application of a merged batch."""

    def __init__(
        self,
        model_tag: str,
        schema: DatasetSchema,
        path: Path | None = None,
        include_input: bool = True,
        handler: logging.Handler | None = None,
    ) -> None:
        self.model_tag = model_tag
        self.canonical = InputCanonicaliser(schema)  # the general form, for inputs not validated here
        self.feature_names = tuple(schema.feature_names)
        self._feature_values = values_getter(self.feature_names)
        self.include_input = include_input
        self.logger = logging.getLogger(DECISION_LOGGER)
        self.logger.propagate = False  # records are data, not diagnostics: never mixed into other logs
        self.logger.setLevel(logging.INFO)
        self.logger.handlers = [handler or decision_handler(path)]  # this logger is ours alone

    def record(
        self,
        applications: Sequence[dict[str, Any]],
        answers: Sequence[dict[str, Any]],
        request_ids: Sequence[str | None],
        max_reasons: Sequence[int],
    ) -> None:
        """One line per application; `applications` are the validated fields the batch was scored from.

        The lines reach the handlers a few at a time (`write_groups`): one log record per line cost
        more than making the line (a LogRecord, a lock, a write and a flush each).
        """
        time = datetime.now(UTC).isoformat(timespec="microseconds")
        lines = []
        for canonical, answer, request_id, limit in zip(
            self.canonical_inputs(applications), answers, request_ids, max_reasons, strict=False
        ):
            lines.append(
                orjson.dumps(
                    {
                        "time": time,
                        "request_id": request_id,
                        "uuid": answer["uuid"],
                        "model_tag": self.model_tag,
                        "input_sha256": hashlib.sha256(canonical).hexdigest(),  # = replay.input_sha256
                        "input": orjson.Fragment(canonical) if self.include_input else None,
                        "pd": answer["pd"],
                        "grade": answer["grade"],
                        "reasons": [reason["code"] for reason in answer["reasons"]],
                        "max_reasons": limit,
                    }
                )
            )
        for group in write_groups(lines, atomic_write_bytes(self.logger.handlers)):
            # A record made directly and handed to the handlers: Logger.info would walk the stack
            # for the caller's file and line, which a record does not show.
            self.logger.handle(logging.LogRecord(DECISION_LOGGER, logging.INFO, "", 0, group, None, None))

    def canonical_inputs(self, applications: Sequence[dict[str, Any]]) -> list[bytes]:
        """`canonical_bytes` of each of a batch's validated applications, cut out of one `orjson.dumps` each.

        The applications of a batch are `vars()` of one request model: the same keys in the same
        order, the features a contiguous run in schema order (contract.build_application_model
        declares them so). The canonical input is then the bytes of that run in the whole dict's
        JSON: dumping the dict as it is and slicing cost a third of building a features-only dict
        per application and dumping that (~0.2 ms of a 100-application batch). A key can only
        occur structurally in the dump (a quote inside a string is escaped), so the first key of
        the run and the key after it mark the cut. An application of another length, or a batch
        whose first application does not hold the features as such a run, takes `canonical_bytes`.
        """
        if not applications:
            return []
        keys = tuple(applications[0])
        cut = self._cut_markers(keys)
        if cut is None:
            return [self.canonical_bytes(application) for application in applications]
        start_marker, end_marker = cut
        size = len(keys)
        canonical = []
        for application in applications:
            if len(application) != size:
                canonical.append(self.canonical_bytes(application))
                continue
            dumped = orjson.dumps(application)
            start = dumped.index(start_marker) + 1  # the run's first key, after its `{` or `,`
            end = dumped.rindex(end_marker) if end_marker else len(dumped) - 1
            canonical.append(b"{" + dumped[start:end] + b"}")
        return canonical

    @functools.lru_cache(maxsize=8)  # noqa: B019 (one recorder per worker; a handful of layouts at most)
    def _cut_markers(self, keys: tuple[str, ...]) -> tuple[bytes, bytes] | None:
        """(the bytes before the features' first key, the bytes that start the key after them; b"" when
        the features end the dict) of applications with these keys, or None when the features are
        not one run in schema order."""
        n = len(self.feature_names)
        if not n or self.feature_names[0] not in keys:
            return None
        first = keys.index(self.feature_names[0])
        if keys[first : first + n] != self.feature_names:
            return None
        start = (b"{" if first == 0 else b",") + orjson.dumps(self.feature_names[0]) + b":"
        after = keys[first + n] if first + n < len(keys) else None
        return start, (b"," + orjson.dumps(after) + b":" if after is not None else b"")

    def canonical_bytes(self, application: dict[str, Any]) -> bytes:
        """The canonical input's JSON bytes (what `replay.input_sha256` hashes) of a validated application.

        The request model hands over every feature already in its canonical type (numbers as
        floats, strict booleans, categories as their canonical label, None when missing), so
        `replay.canonical_input` would only rebuild the same dict value by value: here the
        features are taken in schema order in one step. tests/serving/test_records.py checks the
        two agree on validated applications of every kind.
        """
        return orjson.dumps(dict(zip(self.feature_names, self._feature_values(application), strict=True)))


# What one write(2) may hold and still never interleave with another worker's lines when both
# workers write to the same pipe (a container's stdout): POSIX's PIPE_BUF. A regular file (the
# records file, or stdout redirected to one) takes a whole batch in one write.
PIPE_BUF = select.PIPE_BUF


def atomic_write_bytes(handlers: Sequence[logging.Handler]) -> int | None:
    """Largest write the handlers' streams take atomically: None (any) for regular files, else PIPE_BUF."""
    for handler in handlers:
        try:
            mode = os.fstat(getattr(handler, "stream").fileno()).st_mode  # noqa: B009 (not every handler has one)
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return PIPE_BUF
        if not stat.S_ISREG(mode):
            return PIPE_BUF
    return None


def write_groups(lines: Sequence[bytes], limit: int | None) -> list[str]:
    """`lines` joined by newlines into as few groups as keep each within `limit` bytes (with its
    newline; a longer line alone), in order; None: one group."""
    if limit is None:
        return [b"\n".join(lines).decode()] if lines else []
    groups: list[str] = []
    group: list[bytes] = []
    size = 0
    for line in lines:
        if group and size + len(line) + 1 > limit:
            groups.append(b"\n".join(group).decode())
            group, size = [], 0
        group.append(line)
        size += len(line) + 1
    if group:
        groups.append(b"\n".join(group).decode())
    return groups


class NullRecorder:
    """Decision records switched off (`decision_records: false`)."""

    def record(
        self,
        applications: Sequence[dict[str, Any]],
        answers: Sequence[dict[str, Any]],
        request_ids: Sequence[str | None],
        max_reasons: Sequence[int],
    ) -> None:
        return None


def decision_recorder(
    enabled: bool, model_tag: str, schema: DatasetSchema, path: str | None, include_input: bool
) -> DecisionRecorder | NullRecorder:
    """The recorder the settings ask for (`decision_records`, `..._path`, `..._include_input`)."""
    if not enabled:
        return NullRecorder()
    return DecisionRecorder(model_tag, schema, Path(path) if path else None, include_input)

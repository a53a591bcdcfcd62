"""Process-level tuning of the BentoML runtime: Retry-After on shed requests, the batcher's hold
cap (a patch of BentoML internals, see `cap_batcher_hold_time`) and GC freezing after start-up."""

from __future__ import annotations

import gc
from typing import Any


class RetryAfterOn503:
    """ASGI middleware: a 503 from load shedding tells clients when to retry.

    BentoML's batcher sheds requests whose predicted wait exceeds `max_latency_ms` with a bare
    503; well-behaved clients (and load balancers) back off properly only with Retry-After.
    """

    def __init__(self, app: Any, retry_after_s: int = 1) -> None:
        self.app = app
        self.header = (b"retry-after", str(retry_after_s).encode())

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_retry_after(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] == 503:
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"retry-after"]
                message = {**message, "headers": [*headers, self.header]}
            await send(message)

        await self.app(scope, receive, send_with_retry_after)


def cap_batcher_hold_time(max_hold_ms: float) -> bool:
    """Stop BentoML's adaptive batcher from holding requests longer than `max_hold_ms` on purpose.

    The batcher (bentoml 1.4 `CorkDispatcher`) holds a lone request for about the mean wait it
    observed over its last 50 batches. Under overload those waits are queueing time (hundreds of
    ms), so after a burst it kept holding single requests ~300 ms for minutes (measured by the
    load benchmark). Capping the learned hold leaves queueing and load shedding as they are and
    only bounds the deliberate wait. Returns False (and changes nothing) if BentoML's internals
    moved, so an upgrade degrades to stock behaviour rather than failing.
    """
    try:
        from bentoml._internal.marshal.dispatcher import Optimizer
    except ImportError:
        return False
    refresh = getattr(Optimizer, "trigger_refresh", None)
    if refresh is None or getattr(refresh, "capped_hold_s", None) is not None:
        return refresh is not None
    cap_s = max_hold_ms / 1000.0

    def trigger_refresh_capped(self: Any) -> None:
        refresh(self)
        self.wait = min(self.wait, cap_s)

    trigger_refresh_capped.capped_hold_s = cap_s  # type: ignore[attr-defined]
    Optimizer.trigger_refresh = trigger_refresh_capped
    return True


def freeze_startup_objects() -> None:
    """Move everything alive after start-up (BentoML, LightGBM, pandas, the model) out of GC scans.

    Each scored row allocates a dozen response objects, so the collector runs often; a full
    collection then walked the whole start-up heap and stalled a request by tens of ms (the
    load benchmark's p95 of 100-application requests). Objects created later are still collected.
    """
    gc.collect()
    gc.freeze()



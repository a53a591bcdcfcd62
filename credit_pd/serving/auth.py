"""Bearer-token authentication of the service itself, independent of the ingress in front of it.

A checkout backend calls `/predict` with `Authorization: Bearer <JWT>`, an OAuth 2.0
client-credentials access token (Amazon Cognito resource server, or any OpenID Connect issuer).
`BearerAuth` verifies it with PyJWT against the issuer's JSON Web Key Set before BentoML reads a
byte of the body. The ALB can verify the same token at the edge (chart `ingress.auth.type: jwt`);
this layer is what holds when something reaches a pod without passing the ALB.

Settings (credit_pd/serving/settings.py, env CREDIT_PD_AUTH_*): auth is on exactly when
`auth_jwks_url` is set; then `auth_issuer` and `auth_audience` are required and `auth_scope` is
optional. What is decided here, and why:

- Algorithms: only asymmetric signatures (RS*, PS*, ES*), and only the family of the JWK that
  `kid` names. `alg: none` and HS256 "signed" with the public key (the classic key-confusion
  attack) are refused before any key is used.
- Audience: the `aud` claim, or, for tokens without one, `client_id`: Cognito access tokens carry
  the app client in `client_id` and have no `aud`. `auth_audience` may list several,
  comma-separated. Cognito ID tokens (`token_use: id`) are refused: they identify a user to an
  app, not a client to an API.
- Scope: every scope in `auth_scope` (space-separated) must be in the token's space-separated
  `scope` claim (RFC 8693 / Cognito) or its `scp` claim (string or list, Okta/Azure style).
- Answers: 401 with `WWW-Authenticate: Bearer ...` (RFC 6750) when the token is missing or
  invalid; 403 with `error="insufficient_scope"` when it lacks a scope. `/livez`, `/readyz` and
  `/metrics` stay open (kubelet probes, ALB health checks, Prometheus).
- JWKS source: `https://...` (fetched off the event loop, cached `JWKS_CACHE_TTL_S`, refreshed at
  once when a token names an unknown `kid`, but at most once per `JWKS_MIN_REFRESH_S` so a flood of
  made-up kids cannot hammer the issuer) or `file:///path` (a mounted Secret; re-read the same way,
  so a rotated Secret is picked up). `http://` is accepted only for loopback hosts: over a network,
  plaintext would let anyone on the path swap the keys; the tests serve a JWKS on 127.0.0.1.
- JWKS unreachable: fail closed. When no key that could verify the token is known and the key set
  cannot be fetched, the answer is 503 with Retry-After, not 401: the client's token may well be
  valid, and a 401 would send it to fetch new tokens (and page nobody) while the fault is ours or
  the issuer's. Keys already fetched keep verifying tokens they signed while the issuer is down.
  The outage is logged once (WARNING) and its end once (INFO), not per request.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import jwt

log = logging.getLogger(__name__)

# Signature algorithms accepted, by the JWK key type that can verify them. Symmetric (HS*) and
# `none` are absent on purpose: an HMAC "key" would be the public JWK itself.
ALGORITHMS_BY_KEY_TYPE: dict[str, frozenset[str]] = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "EC": frozenset({"ES256", "ES384", "ES512"}),
}
ALLOWED_ALGORITHMS = frozenset().union(*ALGORITHMS_BY_KEY_TYPE.values())
# Paths that answer without a token: probes, load-balancer health checks, Prometheus.
OPEN_PATHS = frozenset({"/livez", "/readyz", "/metrics"})
# Cognito and most issuers rotate keys rarely and publish the new key before using it; an hour
# of caching costs nothing, and an unknown kid triggers a refresh anyway.
JWKS_CACHE_TTL_S = 3600.0
# Least time between two fetches of the key set (a flood of unknown kids costs one fetch per 10 s).
JWKS_MIN_REFRESH_S = 10.0
# A JWKS is a few KB (the ALB's own limit is 150 KB); the timeout bounds a hung issuer.
JWKS_MAX_BYTES = 1024 * 1024
JWKS_TIMEOUT_S = 5.0
# Clock skew tolerated on exp/nbf/iat between the issuer and the pod.
LEEWAY_S = 30.0
RETRY_AFTER_S = 5
REALM = "credit-pd"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class AuthConfigError(ValueError):
    """The CREDIT_PD_AUTH_* settings are inconsistent; the message names the setting."""


class JWKSUnavailable(Exception):
    """The key set could not be obtained, so no token can be verified (fail closed: 503)."""


class TokenRejected(Exception):
    """The token is missing or invalid (401), or lacks a scope (403)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


@dataclass(frozen=True)
class AuthConfig:
    """What a token must satisfy; built from the settings by `auth_config`."""

    jwks_url: str
    issuer: str
    audiences: frozenset[str]
    scopes: frozenset[str] = frozenset()


def auth_config(
    jwks_url: str | None, issuer: str | None, audience: str | None, scope: str | None = None
) -> AuthConfig | None:
    """The settings as an AuthConfig, None when auth is off (no JWKS URL); raises AuthConfigError
    naming the setting when auth is on but incomplete, so a pod fails at start, not per request."""
    if not jwks_url:
        return None
    check_jwks_url(jwks_url)
    if not issuer:
        raise AuthConfigError(
            "CREDIT_PD_AUTH_ISSUER is required when CREDIT_PD_AUTH_JWKS_URL is set (the `iss` "
            "every token must carry, e.g. https://cognito-idp.<region>.amazonaws.com/<pool id>)"
        )
    audiences = frozenset(a.strip() for a in (audience or "").split(",") if a.strip())
    if not audiences:
        raise AuthConfigError(
            "CREDIT_PD_AUTH_AUDIENCE is required when CREDIT_PD_AUTH_JWKS_URL is set "
            "(the `aud`, or Cognito's `client_id`, of the clients allowed; comma-separated)"
        )
    return AuthConfig(jwks_url, issuer, audiences, frozenset((scope or "").split()))


def check_jwks_url(url: str) -> None:
    """https:// anywhere, http:// only to a loopback host, file:// to an absolute path."""
    parsed = urlparse(url)
    if parsed.scheme == "https" and parsed.hostname:
        return
    if parsed.scheme == "http" and parsed.hostname in LOOPBACK_HOSTS:
        return
    if parsed.scheme == "file" and parsed.path.startswith("/"):
        return
    raise AuthConfigError(
        f"CREDIT_PD_AUTH_JWKS_URL={url!r}: expected https://host/path, file:///absolute/path, or "
        "http:// to a loopback host (plaintext over a network would let anyone on the path "
        "swap the keys)"
    )


def fetch_jwks(url: str) -> dict[str, Any]:
    """The key set document at `url` (blocking: run it in a thread)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        raw = Path(unquote(parsed.path)).read_bytes()[: JWKS_MAX_BYTES + 1]
    else:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=JWKS_TIMEOUT_S) as response:
            raw = response.read(JWKS_MAX_BYTES + 1)
    if len(raw) > JWKS_MAX_BYTES:
        raise ValueError(f"JWKS larger than {JWKS_MAX_BYTES} bytes")
    document = json.loads(raw)
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise TypeError('JWKS is not a JSON object with a "keys" list')
    return document


def keys_by_kid(document: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    """Signature keys of a key set by `kid` (encryption keys and unusable types left out)."""
    keys = {}
    for key in document["keys"]:
        if isinstance(key, dict) and key.get("kty") in ALGORITHMS_BY_KEY_TYPE and key.get("use", "sig") == "sig":
            keys[key.get("kid")] = key
    return keys


class JWKSCache:
    """The issuer's keys, fetched lazily, refreshed on expiry or an unknown kid, rate-limited.

    One per worker process; concurrent requests that need a refresh share one fetch.
    """

    def __init__(
        self,
        url: str,
        ttl_s: float = JWKS_CACHE_TTL_S,
        min_refresh_s: float = JWKS_MIN_REFRESH_S,
        fetch: Callable[[str], dict[str, Any]] = fetch_jwks,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url, self.ttl_s, self.min_refresh_s = url, ttl_s, min_refresh_s
        self._fetch, self._clock = fetch, clock
        self._keys: dict[str | None, dict[str, Any]] | None = None
        self._loaded_at = self._attempted_at = float("-inf")
        self._failing = False
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> dict[str, Any] | None:
        """The JWK for `kid` (None: not in the set, even after a refresh); raises JWKSUnavailable
        when it is not known and the set cannot be fetched."""
        now = self._clock()
        stale = now - self._loaded_at > self.ttl_s
        if self._keys is None or stale or self._lookup(kid) is None:
            await self._refresh()
        found = self._lookup(kid)
        if found is None and (self._keys is None or self._failing):
            raise JWKSUnavailable(f"key set {self.url} unavailable")
        return found

    def _lookup(self, kid: str | None) -> dict[str, Any] | None:
        if self._keys is None:
            return None
        if kid is None and len(self._keys) == 1:  # a one-key set may be used by tokens without kid
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        async with self._lock:
            if self._clock() - self._attempted_at < self.min_refresh_s:
                return  # fetched (or tried) moments ago, possibly by a concurrent request
            self._attempted_at = self._clock()
            try:
                document = await asyncio.to_thread(self._fetch, self.url)
                keys = keys_by_kid(document)
            except Exception as error:  # noqa: BLE001 (any failure of the source means: unavailable)
                if not self._failing:
                    log.warning(
                        "JWKS %s unreachable (%s: %s): tokens whose key is not cached are refused with 503 "
                        "until it answers (fail closed); logged once per outage",
                        self.url,
                        type(error).__name__,
                        error,
                    )
                self._failing = True
                return
            if self._failing:
                log.info("JWKS %s reachable again (%d keys)", self.url, len(keys))
            self._failing = False
            self._keys, self._loaded_at = keys, self._clock()


def bearer_token(scope: dict) -> str | None:
    """The token of an `Authorization: Bearer` header, None when there is none."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            kind, _, token = value.decode("latin-1").strip().partition(" ")
            return (token.strip() or None) if kind.lower() == "bearer" else None
    return None


def token_scopes(claims: dict[str, Any]) -> set[str]:
    """Scopes granted: space-separated `scope` (RFC 8693, Cognito), or `scp` (string or list)."""
    granted: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            granted.update(value.split())
        elif isinstance(value, list):
            granted.update(str(v) for v in value)
    return granted


@functools.lru_cache(maxsize=64)
def prepared_key(key_json: str, algorithm: str) -> jwt.PyJWK:
    """The JWK parsed for `algorithm`, once per key: parsing the RSA numbers was a quarter of the
    ~0.2 ms a verification took (221 vs 169 us per RS256 token on this machine)."""
    return jwt.PyJWK(json.loads(key_json), algorithm=algorithm)


def as_set(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, Iterable):
        return {str(v) for v in value}
    return set()


class TokenVerifier:
    """Verifies one token against an AuthConfig: signature, algorithm, iss, aud, exp/nbf, scope."""

    def __init__(self, config: AuthConfig, keys: JWKSCache) -> None:
        self.config, self.keys = config, keys

    async def verify(self, token: str | None) -> dict[str, Any]:
        """The token's claims; raises TokenRejected (401/403) or JWKSUnavailable (503)."""
        if token is None:
            raise TokenRejected(401, "", "a Bearer token is required")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise TokenRejected(401, "invalid_token", f"malformed token: {error}") from None
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise TokenRejected(
                401,
                "invalid_token",
                f"algorithm {algorithm!r} is not accepted (asymmetric only: {', '.join(sorted(ALLOWED_ALGORITHMS))})",
            )
        key = await self.keys.key(header.get("kid"))
        if key is None:
            raise TokenRejected(401, "invalid_token", f"no key {header.get('kid')!r} in the issuer's key set")
        claims = self._decode(token, key, algorithm)
        self._check_claims(claims)
        return claims

    def _decode(self, token: str, key: dict[str, Any], algorithm: str) -> dict[str, Any]:
        if algorithm not in ALGORITHMS_BY_KEY_TYPE[key["kty"]] or key.get("alg", algorithm) != algorithm:
            raise TokenRejected(401, "invalid_token", f"algorithm {algorithm} does not match key {key.get('kid')!r}")
        try:
            return jwt.decode(
                token,
                prepared_key(json.dumps(key, sort_keys=True), algorithm),
                algorithms=[algorithm],
                issuer=self.config.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss"], "verify_aud": False},
            )
        except jwt.ImmatureSignatureError:
            raise TokenRejected(401, "invalid_token", "token not valid yet (nbf/iat in the future)") from None
        except jwt.PyJWTError as error:
            raise TokenRejected(401, "invalid_token", str(error) or type(error).__name__) from None

    def _check_claims(self, claims: dict[str, Any]) -> None:
        if claims.get("token_use", "access") != "access":
            raise TokenRejected(401, "invalid_token", f"token_use {claims['token_use']!r}: an access token is required")
        audiences = as_set(claims["aud"]) if "aud" in claims else as_set(claims.get("client_id"))
        if not audiences & self.config.audiences:
            raise TokenRejected(401, "invalid_token", "audience (aud, or client_id) is not one this service accepts")
        missing = self.config.scopes - token_scopes(claims)
        if missing:
            raise TokenRejected(403, "insufficient_scope", f"token lacks scope {' '.join(sorted(missing))}")


def challenge(error: TokenRejected, scopes: frozenset[str]) -> bytes:
    """The RFC 6750 WWW-Authenticate value for a refusal."""
    parts = [f'realm="{REALM}"']
    if error.error:
        description = error.description.replace("\\", "").replace('"', "'")
        parts += [f'error="{error.error}"', f'error_description="{description}"']
    if scopes:
        parts.append(f'scope="{" ".join(sorted(scopes))}"')
    return ("Bearer " + ", ".join(parts)).encode("latin-1", "replace")


async def send_json(send: Any, status: int, body: dict, headers: list[tuple[bytes, bytes]]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload, "more_body": False})


class BearerAuth:
    """ASGI middleware: every HTTP request but the open paths needs a valid Bearer token.

    Off (a pass-through) when the settings give no JWKS URL, so service.py adds it unconditionally
    and `make run` needs no identity provider.
    """

    def __init__(
        self,
        app: Any,
        config: AuthConfig | None,
        open_paths: frozenset[str] = OPEN_PATHS,
        keys: JWKSCache | None = None,
    ) -> None:
        self.app = app
        self.open_paths = open_paths
        self.verifier = TokenVerifier(config, keys or JWKSCache(config.jwks_url)) if config else None
        if config:
            log.info(
                "bearer-token auth on: issuer %s, audiences %s, scopes %s, JWKS %s",
                config.issuer,
                sorted(config.audiences),
                sorted(config.scopes) or "none required",
                config.jwks_url,
            )

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self.verifier is None or scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        try:
            await self.verifier.verify(bearer_token(scope))
        except TokenRejected as error:
            log.info("%d %s %s: %s", error.status, scope["method"], scope["path"], error.description)
            await send_json(
                send,
                error.status,
                {"error": error.error or "unauthorized", "detail": error.description},
                [(b"www-authenticate", challenge(error, self.verifier.config.scopes))],
            )
            return
        except JWKSUnavailable as error:
            await send_json(
                send,
                503,
                {
                    "error": "authentication_unavailable",
                    "detail": f"{error}; the token cannot be verified now, retry later",
                },
                [(b"retry-after", str(RETRY_AFTER_S).encode())],
            )
            return
        await self.app(scope, receive, send)

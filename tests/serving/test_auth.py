"""Bearer-token auth (credit_pd/serving/auth.py) with real RSA and EC keys and a real JWKS server.

The middleware wraps a tiny ASGI app that answers 200, so every status seen here is the
middleware's own decision. The JWKS is served over HTTP by a thread on 127.0.0.1 (the module
accepts plain http:// only for loopback hosts), or read from a file:// path.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.testclient import TestClient

from credit_pd.serving.auth import (
    AuthConfig,
    AuthConfigError,
    BearerAuth,
    JWKSCache,
    auth_config,
)
from tests.serving.conftest import isolated_metrics

ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_TEST"
AUDIENCE = "checkout-backend"
SCOPE = "credit-pd/predict"


class Key:
    """A signing key with its public JWK."""

    def __init__(self, kind: str) -> None:
        self.kid = f"{kind}-{uuid.uuid4().hex[:8]}"
        if kind == "rsa":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.algorithm = "RS256"
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.algorithm = "ES256"
            jwk = jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        self.jwk = {**jwk, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(self, kid: str | None = "", **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, "scope": SCOPE, **claims}
        payload = {k: v for k, v in payload.items() if v is not None}
        headers = {"kid": self.kid if kid == "" else kid} if kid is not None else {}
        return jwt.encode(payload, self.private, algorithm=self.algorithm, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict, claims: dict, secret: bytes | None = None) -> str:
    """A token built by hand: `alg: none` (empty signature) or HMAC-SHA256 with `secret`."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest() if secret else b""
    return f"{signing_input}.{b64(signature)}"


def valid_claims() -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, "scope": SCOPE}


class JWKSServer:
    """A JWKS endpoint on 127.0.0.1 in a thread; `keys` may change, `stop()` takes it down."""

    def __init__(self, keys: list[Key]) -> None:
        self.keys = keys
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                body = json.dumps({"keys": [k.jwk for k in server.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


async def ok_app(scope: dict, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"scored"})


def client_for(url: str, scope: str | None = SCOPE, audience: str = AUDIENCE, min_refresh_s: float = 0.0) -> TestClient:
    config = auth_config(url, ISSUER, audience, scope)
    assert config is not None
    return TestClient(BearerAuth(ok_app, config, keys=JWKSCache(url, min_refresh_s=min_refresh_s)))


def call(client: TestClient, token: str | None, path: str = "/predict") -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post(path, headers=headers, json={"applications": []})


@pytest.fixture(scope="module")
def rsa_key() -> Key:
    return Key("rsa")


@pytest.fixture(scope="module")
def ec_key() -> Key:
    return Key("ec")


@pytest.fixture()
def jwks(rsa_key: Key, ec_key: Key) -> Iterator[JWKSServer]:
    server = JWKSServer([rsa_key, ec_key])
    yield server
    server.stop()


@pytest.fixture()
def client(jwks: JWKSServer) -> TestClient:
    return client_for(jwks.url)


def assert_refused(response: Any, status: int = 401, error: str = "invalid_token") -> None:
    assert response.status_code == status, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="credit-pd"')
    if error:
        assert f'error="{error}"' in challenge
    assert response.text != "scored"


@pytest.mark.parametrize("kind", ["rsa_key", "ec_key"])
def test_valid_token_passes(client: TestClient, kind: str, request: pytest.FixtureRequest) -> None:
    response = call(client, request.getfixturevalue(kind).token())
    assert (response.status_code, response.text) == (200, "scored")


def test_missing_token_is_401_with_a_challenge(client: TestClient) -> None:
    assert_refused(call(client, None), error="")
    response = client.post("/predict", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert_refused(response, error="")


def test_health_paths_stay_open(client: TestClient) -> None:
    for path in ("/livez", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200, path
    assert_refused(client.get("/docs.json"), error="")


@pytest.mark.parametrize(
    "claims, reason",
    [
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"nbf": int(time.time()) + 600}, "not yet valid"),
        ({"iss": "https://issuer.example.com"}, "wrong issuer"),
        ({"aud": "another-api"}, "wrong audience"),
        ({"exp": None}, "no expiry"),
        ({"token_use": "id"}, "an ID token, not an access token"),
    ],
    ids=["expired", "not-yet-valid", "wrong-iss", "wrong-aud", "no-exp", "id-token"],
)
def test_invalid_claims_are_401(client: TestClient, rsa_key: Key, claims: dict, reason: str) -> None:
    assert_refused(call(client, rsa_key.token(**claims)))


def test_cognito_access_token_audience_is_its_client_id(client: TestClient, rsa_key: Key) -> None:
    """Cognito client-credentials tokens carry `client_id` and no `aud`."""
    cognito = rsa_key.token(aud=None, client_id=AUDIENCE, token_use="access")
    assert call(client, cognito).status_code == 200
    assert_refused(call(client, rsa_key.token(aud=None, client_id="someone-else")))


def test_token_signed_by_another_key_is_401(client: TestClient, rsa_key: Key) -> None:
    impostor = Key("rsa")
    assert_refused(call(client, impostor.token(kid=rsa_key.kid)))  # the trusted kid, a foreign key
    assert_refused(call(client, impostor.token()))  # a kid the issuer never published


def test_alg_none_is_401(client: TestClient, rsa_key: Key) -> None:
    token = unsigned_token({"alg": "none", "typ": "JWT", "kid": rsa_key.kid}, valid_claims())
    response = call(client, token)
    assert_refused(response)
    assert "'none' is not accepted" in response.json()["detail"]


@pytest.mark.parametrize("secret", ["pem", "jwk-json"])
def test_hs256_signed_with_the_public_key_is_401(client: TestClient, rsa_key: Key, secret: str) -> None:
    """Key confusion: an HMAC over the public key (which anyone has) must not verify."""
    key_bytes = rsa_key.public_pem() if secret == "pem" else json.dumps(rsa_key.jwk).encode()
    token = unsigned_token({"alg": "HS256", "typ": "JWT", "kid": rsa_key.kid}, valid_claims(), key_bytes)
    response = call(client, token)
    assert_refused(response)
    assert "'HS256' is not accepted" in response.json()["detail"]


def test_algorithm_must_match_the_keys_family(client: TestClient, ec_key: Key) -> None:
    """An RS256 token naming an EC key's kid is refused before the key is tried."""
    rsa_signer = Key("rsa")
    assert_refused(call(client, rsa_signer.token(kid=ec_key.kid)))


def test_missing_scope_is_403(jwks: JWKSServer, rsa_key: Key) -> None:
    client = client_for(jwks.url, scope=f"{SCOPE} credit-pd/admin")
    response = call(client, rsa_key.token())
    assert_refused(response, status=403, error="insufficient_scope")
    assert 'scope="credit-pd/admin credit-pd/predict"' in response.headers["www-authenticate"]
    assert call(client, rsa_key.token(scope=f"openid {SCOPE} credit-pd/admin")).status_code == 200
    assert call(client, rsa_key.token(scope=None, scp=[SCOPE, "credit-pd/admin"])).status_code == 200


def test_scope_is_optional(jwks: JWKSServer, rsa_key: Key) -> None:
    assert call(client_for(jwks.url, scope=None), rsa_key.token(scope=None)).status_code == 200


def test_key_rotation_is_picked_up_on_an_unknown_kid(rsa_key: Key) -> None:
    server = JWKSServer([rsa_key])
    try:
        client = client_for(server.url, min_refresh_s=0.0)
        assert call(client, rsa_key.token()).status_code == 200
        assert call(client, rsa_key.token()).status_code == 200
        assert server.hits == 1  # cached
        rotated = Key("rsa")
        server.keys = [rotated]  # the issuer publishes a new key and retires the old one
        assert call(client, rotated.token()).status_code == 200
        assert server.hits == 2
    finally:
        server.stop()


def test_unknown_kids_refresh_at_most_once_per_interval(rsa_key: Key) -> None:
    server = JWKSServer([rsa_key])
    try:
        client = client_for(server.url, min_refresh_s=3600.0)
        assert call(client, rsa_key.token()).status_code == 200
        for _ in range(5):
            assert_refused(call(client, Key("ec").token()))
        assert server.hits == 1, "a flood of made-up kids must not hammer the issuer"
    finally:
        server.stop()


def test_jwks_down_fails_closed_with_503_and_logs_once(rsa_key: Key, caplog: pytest.LogCaptureFixture) -> None:
    server = JWKSServer([rsa_key])
    server.stop()
    client = client_for(server.url)
    with caplog.at_level(logging.WARNING, logger="credit_pd.serving.auth"):
        responses = [call(client, rsa_key.token()) for _ in range(3)]
    for response in responses:
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert response.json()["error"] == "authentication_unavailable"
    assert call(client, None).status_code == 401  # no token at all is still the client's fault
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]


def test_cached_keys_keep_verifying_while_the_jwks_is_down(rsa_key: Key) -> None:
    server = JWKSServer([rsa_key])
    client = client_for(server.url)
    assert call(client, rsa_key.token()).status_code == 200
    server.stop()
    assert call(client, rsa_key.token()).status_code == 200
    assert call(client, Key("rsa").token()).status_code == 503  # unknown kid, cannot refresh


def test_jwks_from_a_file_and_its_rotation(tmp_path: Path, rsa_key: Key, ec_key: Key) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [rsa_key.jwk]}))
    client = client_for(path.as_uri())
    assert call(client, rsa_key.token()).status_code == 200
    assert_refused(call(client, Key("rsa").token(kid=rsa_key.kid)))
    path.write_text(json.dumps({"keys": [ec_key.jwk]}))  # a rotated Secret mounted as a file
    assert call(client, ec_key.token()).status_code == 200


def test_auth_is_off_without_a_jwks_url() -> None:
    assert auth_config(None, None, None) is None
    client = TestClient(BearerAuth(ok_app, None))
    assert client.post("/predict").status_code == 200


@pytest.mark.parametrize(
    "args, setting",
    [
        (("https://issuer.example.com/jwks.json", None, AUDIENCE), "CREDIT_PD_AUTH_ISSUER"),
        (("https://issuer.example.com/jwks.json", ISSUER, " , "), "CREDIT_PD_AUTH_AUDIENCE"),
        (("http://issuer.example.com/jwks.json", ISSUER, AUDIENCE), "CREDIT_PD_AUTH_JWKS_URL"),
        (("file:relative/jwks.json", ISSUER, AUDIENCE), "CREDIT_PD_AUTH_JWKS_URL"),
        (("ftp://issuer.example.com/jwks.json", ISSUER, AUDIENCE), "CREDIT_PD_AUTH_JWKS_URL"),
    ],
    ids=["no-issuer", "no-audience", "plain-http-remote", "relative-file", "other-scheme"],
)
def test_incomplete_settings_name_the_setting(args: tuple, setting: str) -> None:
    with pytest.raises(AuthConfigError, match=setting):
        auth_config(*args)


def test_audience_list_and_scopes_parse() -> None:
    config = auth_config("https://issuer.example.com/jwks.json", ISSUER, "a, b", "x y")
    assert config == AuthConfig(
        "https://issuer.example.com/jwks.json", ISSUER, frozenset({"a", "b"}), frozenset({"x", "y"})
    )


# ------------------------------------------------ the real service, in process (ASGI) ---------


@pytest.fixture(scope="module")
def authed_service(trained_run: Any, rsa_key: Key, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """service.py imported with auth on, its JWKS from a file (as a mounted Secret would be)."""
    import importlib
    import sys

    jwks_file = tmp_path_factory.mktemp("jwks") / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [rsa_key.jwk]}))
    env = {
        "CREDIT_PD_MODEL_TAG": trained_run.model_tag,
        "CREDIT_PD_AUTH_JWKS_URL": jwks_file.as_uri(),
        "CREDIT_PD_AUTH_ISSUER": ISSUER,
        "CREDIT_PD_AUTH_AUDIENCE": AUDIENCE,
        "CREDIT_PD_AUTH_SCOPE": SCOPE,
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        sys.modules.pop("service", None)
        service = importlib.import_module("service")
        with isolated_metrics(), TestClient(service.CreditPDService.to_asgi()) as client:
            yield client
        sys.modules.pop("service", None)


def test_service_with_auth_on_needs_a_token_for_predict_only(
    authed_service: TestClient, rsa_key: Key, small_sample_path: Path, schema: Any
) -> None:
    from credit_pd.client import requests_from_frame
    from credit_pd.dataset import labelled_mask, load_dataset

    frame = load_dataset(small_sample_path, schema)
    [application] = requests_from_frame(frame[~labelled_mask(frame, schema)].head(1), schema)
    body = {"applications": [application]}
    assert_refused(authed_service.post("/predict", json=body), error="")
    foreign = Key("rsa").token()
    assert_refused(authed_service.post("/predict", json=body, headers={"Authorization": f"Bearer {foreign}"}))
    response = authed_service.post("/predict", json=body, headers={"Authorization": f"Bearer {rsa_key.token()}"})
    assert response.status_code == 200, response.text
    assert 0.0 <= response.json()[0]["pd"] <= 1.0
    # /metrics answers only under `bentoml serve` (its Prometheus multiprocess set-up): the unit
    # tests above and make cluster-test's auth pod check that it stays open.
    for path in ("/livez", "/readyz"):
        assert authed_service.get(path).status_code == 200, path

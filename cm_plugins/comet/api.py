"""HTTP to a Nucleus endpoint: token or signed (API key) requests and the API's status conventions.

200 JSON, 204 empty, 201 with a Location polled until its body has no
``status``, 303 to a console URL, one-line messages for 400/401/403, and a
login token that expired renewed once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import string
import time
from collections.abc import Callable
from typing import Any

from cm.errors import AuthError, ConfigError, NotFound, ProviderError

NONCE_ALPHABET = string.ascii_uppercase + string.digits
USERPASS_MESSAGES = {401: "Not Authenticated", 403: "Permission denied"}


def sign(secret: str, nonce: str, timestamp: str) -> str:
    """The base64 HMAC-SHA256 of ``"nonce: N\\ntimestamp: T"``, what httpsig sends for these two headers."""
    text = f"nonce: {nonce}\ntimestamp: {timestamp}".encode()
    return base64.b64encode(hmac.new(secret.encode(), text, hashlib.sha256).digest()).decode()


def signed_headers(api_key: str, secret: str, now: float | None = None, nonce: str | None = None) -> dict[str, str]:
    nonce = nonce or "".join(secrets.choice(NONCE_ALPHABET) for _ in range(10))
    stamp = str(int(now if now is not None else time.time()))
    return {"X-Api-Key": api_key, "timestamp": stamp, "nonce": nonce,
            "Authorization": f'Signature keyId="",algorithm="hmac-sha256",signature="{sign(secret, nonce, stamp)}",'
                             f'headers="nonce timestamp"'}


def message(response: Any) -> str:
    """The server's one-line reason: a JSON string, {"detail"|"error": ...}, or the text."""
    try:
        body = response.json()
    except ValueError:
        body = response.text.strip()
    if isinstance(body, dict):
        body = body.get("detail") or body.get("error") or body.get("non_field_errors") or json.dumps(body)
    if isinstance(body, list):
        body = "; ".join(str(b) for b in body)
    return " ".join(str(body).split())[:300] or f"HTTP {response.status_code}"


class Nucleus:
    """One endpoint: ``base_url`` (…/nucleus) and ``version`` (v1), with one way to authenticate."""

    def __init__(self, base_url: str, version: str = "v1", *, username: str = "", password: str = "",
                 api_key: str = "", api_secret: str = "", token: str = "", timeout: float = 60,
                 save_token: Callable[[str], None] | None = None, verify: bool | str = True) -> None:
        import requests

        if not base_url:
            raise ConfigError("a comet cloud needs base_url (the Nucleus endpoint, e.g. https://host/nucleus)")
        self.base = base_url.rstrip("/")
        self.version = version.strip("/") or "v1"
        self.username, self.password = username, password
        self.api_key, self.api_secret = api_key, api_secret
        self.token = token
        self.timeout = timeout
        self.save_token = save_token or (lambda _t: None)
        self.http = requests.Session()
        self.http.verify = verify

    @property
    def signed(self) -> bool:
        return bool(self.api_key and self.api_secret)

    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.base}/{self.version}/{path.lstrip('/')}"

    # -- authentication -----------------------------------------------------------------
    def login(self) -> str:
        if not (self.username and self.password):
            raise AuthError("no credentials for this endpoint: run `cm comet init`, or set username and password")
        response = self._send("POST", f"{self.base}/rest-auth/login/", {},
                              json={"username": self.username, "password": self.password})
        if response.status_code != 200:
            raise AuthError(f"login refused: {message(response)}")
        self.token = response.json()["key"]
        self.save_token(self.token)
        return self.token

    def logout(self) -> None:
        if self.token:
            self._send("POST", f"{self.base}/rest-auth/logout/", {"Authorization": f"Token {self.token}"})
            self.token = ""
            self.save_token("")

    def getkey(self, username: str, password: str) -> dict[str, str]:
        """The user's API key (GET getkey under HTTP Basic, asking for JSON)."""
        response = self._send("GET", f"{self.base}/getkey", {"Accept": "application/json"},
                              auth=(username, password))
        if response.status_code != 200:
            raise AuthError(f"getkey refused: {message(response)}")
        return response.json()

    def _auth(self) -> dict[str, str]:
        if self.signed:
            return signed_headers(self.api_key, self.api_secret)
        return {"Authorization": f"Token {self.token or self.login()}"}

    # -- requests ------------------------------------------------------------------------------
    def _send(self, method: str, url: str, headers: dict[str, str], **kwargs: Any) -> Any:
        import requests

        try:
            return self.http.request(method, url, headers=headers, timeout=self.timeout, allow_redirects=False,
                                     **kwargs)
        except requests.RequestException as exc:
            reason = type(exc).__name__ if not str(exc) else str(exc).split("(Caused by")[0].strip()
            raise ProviderError(f"cannot reach {self.base}: {reason}") from None

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send with credentials; a token that expired is renewed once.  Returns the raw response."""
        headers = dict(kwargs.pop("headers", {}))
        response = self._send(method, self.url(path), {**headers, **self._auth()}, **kwargs)
        if response.status_code == 401 and not self.signed and self.password:
            self.token = ""
            response = self._send(method, self.url(path), {**headers, **self._auth()}, **kwargs)
        return response

    def check(self, response: Any, what: str) -> Any:
        """The body of a successful answer; an error whose class matches the status otherwise."""
        status = response.status_code
        if status in (200, 201, 204, 303):
            if status in (204, 303) or not response.content:
                return None
            if "json" not in response.headers.get("Content-Type", ""):
                return response.text
            try:
                return response.json()
            except ValueError:
                raise ProviderError(f"{what}: the endpoint answered malformed JSON") from None
        text = message(response)
        if status in USERPASS_MESSAGES and not self.signed and text.lower() in ("", "not found."):
            text = USERPASS_MESSAGES[status]
        if status == 401:
            raise AuthError(f"{what}: {text}")
        if status == 404:
            raise NotFound(f"{what}: {text}")
        if status == 403:
            raise AuthError(f"{what}: permission denied: {text}")
        raise ProviderError(f"{what}: {text}")

    def get(self, path: str, what: str, **params: Any) -> Any:
        return self.check(self.request("GET", path, params=params), what)

    def put(self, path: str, what: str, **params: Any) -> Any:
        return self.check(self.request("PUT", path, params=params), what)

    def post(self, path: str, what: str, body: dict[str, Any], poll_timeout: float = 60) -> Any:
        """POST; a 201 is polled at its Location about once a second until the body has no ``status``."""
        response = self.request("POST", path, json=body)
        result = self.check(response, what)
        if response.status_code == 201 and response.headers.get("Location"):
            deadline = time.monotonic() + poll_timeout
            while isinstance(result, dict) and "status" in result:
                if time.monotonic() > deadline:
                    raise ProviderError(f"{what}: still {result['status']} after {poll_timeout:g} s")
                time.sleep(1)
                result = self.get(response.headers["Location"], what)
            if result is None:
                result = self.get(response.headers["Location"], what)
        return result

    def redirect(self, path: str, what: str) -> str:
        """The Location of a 303 (console links)."""
        response = self.request("GET", path)
        if response.status_code == 303:
            return response.headers["Location"]
        self.check(response, what)
        raise ProviderError(f"{what}: expected a 303 redirect, got HTTP {response.status_code}")

    def delete(self, path: str, what: str) -> Any:
        return self.check(self.request("DELETE", path), what)

    def upload(self, path: str, what: str, filename: str, handle: Any, md5: str) -> None:
        response = self.request("POST", path, headers={"md5": md5}, files={"file": (filename, handle)})
        self.check(response, what)

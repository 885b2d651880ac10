"""Who is asking: login tokens, HTTP Basic, and the API-key signature scheme with its nonces.

Signed requests carry ``X-Api-Key``, ``timestamp`` (unix seconds), ``nonce``
and ``Authorization: Signature ... signature="<base64 HMAC-SHA256>"`` over
``"nonce: N\\ntimestamp: T"``, keyed with the user's API secret.  A timestamp
more than the window (30 minutes) off is refused, and so is a nonce seen before.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import string
import threading
import time

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cm_nucleus.core import ApiError, Service, log
from cm_nucleus.store import ApiKey, Nonce, Token

SIGNATURE = re.compile(r'(\w+)="([^"]*)"')
NONCE = re.compile(r"^[A-Za-z0-9]{8,64}$")
SECRET_ALPHABET = string.ascii_letters + string.digits


def _hasher():  # argon2 is imported on first use: the service's start-up stays quick
    from argon2 import PasswordHasher

    return PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    """Checks credentials against the configuration (passwords) and the database (tokens, keys, nonces)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._tokens: dict[str, tuple[str, float]] = {}  # digest -> (user, created): saves a query per request
        self._lock = threading.Lock()

    def check_password(self, username: str, password: str) -> str:
        from argon2.exceptions import InvalidHashError, VerificationError

        user = self.service.settings.users.get(username)
        if user is None:
            _hasher().hash(password)  # as slow as a real check: no user enumeration by timing
            raise ApiError(401, "Invalid username/password.")
        try:
            _hasher().verify(user.password_hash, password)
        except (VerificationError, InvalidHashError):
            raise ApiError(401, "Invalid username/password.") from None
        return username

    # -- tokens ----------------------------------------------------------------------------
    def login(self, username: str, password: str) -> str:
        self.check_password(username, password)
        token = secrets.token_hex(20)
        now = time.time()
        with self.service.store.session() as s:
            s.add(Token(digest=_digest(token), user=username, created=now))
        with self._lock:
            self._tokens[_digest(token)] = (username, now)
        log.info("login: %s", username)
        return token

    def logout(self, token: str) -> None:
        digest = _digest(token)
        with self.service.store.session() as s:
            s.query(Token).filter(Token.digest == digest).delete()
        with self._lock:
            self._tokens.pop(digest, None)

    def known_token(self, headers) -> str | None:
        """The user of a valid token already in memory, else None (then ``user`` decides, off the event loop)."""
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "token" or headers.get("x-api-key"):
            return None
        with self._lock:
            hit = self._tokens.get(_digest(value.strip()))
        if hit and hit[0] in self.service.settings.users and time.time() - hit[1] <= self.service.settings.token_ttl:
            return hit[0]
        return None

    def _token_user(self, token: str) -> str:
        digest = _digest(token)
        with self._lock:
            hit = self._tokens.get(digest)
        if hit is None:
            with self.service.store.session() as s:
                row = s.get(Token, digest)
                hit = (row.user, row.created) if row else None
            if hit:
                with self._lock:
                    self._tokens[digest] = hit
        if hit is None or hit[0] not in self.service.settings.users:
            raise ApiError(401, "Invalid token.")
        if time.time() - hit[1] > self.service.settings.token_ttl:
            self.logout(token)
            raise ApiError(401, "Token has expired.")
        return hit[0]

    # -- API keys ---------------------------------------------------------------------------
    def api_key(self, username: str) -> dict[str, str]:
        """The user's key (made on first request): key_name is the e-mail, key the 24-character secret."""
        with self.service.store.session() as s:
            row = s.get(ApiKey, username)
            if row is None:
                row = ApiKey(user=username, key_name=self.service.user(username).email,
                             secret="".join(secrets.choice(SECRET_ALPHABET) for _ in range(24)))
                s.add(row)
            return {"key_name": row.key_name, "key": row.secret}

    def _signed_user(self, headers) -> str:
        key, stamp, nonce = headers.get("x-api-key"), headers.get("timestamp"), headers.get("nonce")
        auth = headers.get("authorization", "")
        if not (stamp and nonce and auth.lower().startswith("signature ")):
            raise ApiError(401, "signed requests need timestamp, nonce and an Authorization: Signature header")
        with self.service.store.session() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.key_name == key))
            user, secret = (row.user, row.secret) if row else (None, None)
        if user is None:
            raise ApiError(401, "Invalid API key.")
        try:
            when = float(stamp)
        except ValueError:
            raise ApiError(401, "timestamp must be unix seconds") from None
        if not abs(time.time() - when) <= self.service.settings.timestamp_window:  # also refuses nan
            raise ApiError(401, "Timestamp is outside the allowed window.")
        if not NONCE.match(nonce):
            raise ApiError(401, "Nonce check failed.")
        fields = dict(SIGNATURE.findall(auth))
        if fields.get("algorithm", "hmac-sha256").lower() != "hmac-sha256":
            raise ApiError(401, "only hmac-sha256 signatures are accepted")
        if fields.get("headers", "nonce timestamp").lower().split() != ["nonce", "timestamp"]:
            raise ApiError(401, 'the signature must cover headers="nonce timestamp"')
        expected = hmac.new(secret.encode(), f"nonce: {nonce}\ntimestamp: {stamp}".encode(), hashlib.sha256).digest()
        try:
            given = base64.b64decode(fields.get("signature", ""), validate=True)
        except (binascii.Error, ValueError):
            given = b""
        if not hmac.compare_digest(expected, given):
            raise ApiError(401, "Signature check failed.")
        try:
            with self.service.store.session() as s:
                s.add(Nonce(nonce=nonce, user=user, seen=time.time()))
        except IntegrityError:
            raise ApiError(401, "Nonce check failed.") from None
        return user

    # -- any scheme ---------------------------------------------------------------------------
    def user(self, headers) -> str:
        """The user a request authenticates as; 401 with a one-line reason otherwise."""
        auth = headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if headers.get("x-api-key"):
            return self._signed_user(headers)
        if scheme.lower() == "token" and value.strip():
            return self._token_user(value.strip())
        if scheme.lower() == "basic":
            return self.check_password(*basic(value))
        raise ApiError(401, "Authentication credentials were not provided.")


def basic(value: str) -> tuple[str, str]:
    try:
        username, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ApiError(401, "malformed Basic credentials") from None
    if not sep:
        raise ApiError(401, "malformed Basic credentials")
    return username, password

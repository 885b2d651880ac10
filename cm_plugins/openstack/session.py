"""From a cm cloud config to an openstacksdk Connection, and from SDK errors to cm errors.

Everything that imports openstack/keystoneauth lives behind this module, which
the provider imports only when an OpenStack cloud is used.

Faults: a dropped connection and a 5xx/429 answer are retried by keystoneauth
itself (``connect_retries``, ``status_code_retries`` with exponential backoff
from 0.5 s); a clouds.yaml entry may set its own values for these keys.
A refused connection is not retried: nothing listens at that address, and
seconds of backoff before saying so help nobody.
"""

from __future__ import annotations

import functools
import logging
import re
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import keystoneauth1.exceptions as ks_exc
import openstack
import openstack.config
import openstack.connection
from keystoneauth1 import session as ks_session
from openstack import exceptions as os_exc

from cm.config import MASK, is_secret
from cm.errors import AuthError, CmError, ConfigError, Conflict, NotFound, ProviderError, QuotaExceeded, Throttled

# Retries applied unless the cloud's own config says otherwise.
RETRY_DEFAULTS: dict[str, Any] = {
    "connect_retries": 3,
    "status_code_retries": 3,
    "retriable_status_codes": [429, 500, 502, 503, 504],
}
API_TIMEOUT = 60.0  # seconds per HTTP request, so a hung cloud cannot hang cm
POOL_SIZE = 64  # parallel boots share one connection pool; urllib3's default of 10 would churn
# Keys of a cm cloud entry that are cm's own, not openstacksdk's.
CM_KEYS = {"kind", "cloud", "source", "file", "defaults", "timeout", "network", "public_network",
           "name", "where", "ssh_options"}  # ssh_options: how cm logs into the VMs (cm monitor)

PASSWORD_AUTH = ("password", "v3password", "v2password")

F = TypeVar("F", bound=Callable[..., Any])


def _quiet_sdk() -> None:
    """The SDK must not write on the user's terminal: no log lines, no deprecation warnings."""
    for name in ("openstack", "keystoneauth", "keystoneauth1", "stevedore", "urllib3"):
        logger = logging.getLogger(name)
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
    warnings.filterwarnings("ignore", module=r"(openstack|keystoneauth1)(\.|$)")
    for category in ("OpenStackWarning", "OpenStackDeprecationWarning"):
        cls = getattr(getattr(openstack, "warnings", None), category, None)
        if cls is not None:
            warnings.simplefilter("ignore", cls)


_quiet_sdk()


def _refused(exc: BaseException) -> bool:
    """The error (or one it came from) is a refused TCP connection."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError) or "[Errno 111]" in str(current):
            return True
        current = current.__cause__ or current.__context__ or next(
            (a for a in getattr(current, "args", ()) if isinstance(a, BaseException)), None)
    return False


class _PoolAdapter(ks_session.TCPKeepAliveAdapter):
    """The connection pool; a refused connection leaves as an error keystoneauth does not retry."""

    def send(self, *args: Any, **kwargs: Any) -> Any:
        import requests

        try:
            return super().send(*args, **kwargs)
        except requests.exceptions.ConnectionError as exc:
            if _refused(exc):  # a plain RequestException: keystoneauth reports it at once
                raise requests.exceptions.RequestException(f"Connection refused: {exc}") from exc
            raise


class _Session(ks_session.Session):
    """keystoneauth's Session, pooling enough connections for parallel boots."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        adapter = _PoolAdapter(pool_maxsize=POOL_SIZE, tls_ciphers=self.tls_ciphers,
                               tls_min_version=self.tls_min_version)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)


class _SessionFactory:
    """Makes the Session once the cloud's config is known, so its ``connect_retries`` (which also
    covers the token and discovery requests, made outside any service proxy) is the cloud's own."""

    def __init__(self) -> None:
        self.connect_retries = RETRY_DEFAULTS["connect_retries"]

    def __call__(self, *args: Any, **kwargs: Any) -> _Session:
        kwargs.setdefault("connect_retries", self.connect_retries)
        return _Session(*args, **kwargs)


def secrets_of(value: Any) -> set[str]:
    """Every secret-looking value in a config (passwords, tokens, application credential secrets)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if is_secret(str(key)) and isinstance(item, str) and item:
                found.add(item)
            else:
                found |= secrets_of(item)
    elif isinstance(value, list):
        for item in value:
            found |= secrets_of(item)
    return found


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by the mask."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, MASK)
    return text


def cloud_region(name: str, conf: dict[str, Any]) -> Any:
    """The openstacksdk CloudRegion of a cm cloud entry.

    A clouds.yaml cloud is read by the SDK from the file cm found it in; a
    cm.yaml entry (``cm cloud add --from-env``) carries its settings itself and
    may name a clouds.yaml cloud with ``cloud:``.  OS_* variables of the shell
    never leak into either: only ``--from-env`` reads them, once.
    """
    overrides = {k: v for k, v in conf.items() if k not in CM_KEYS}
    if conf.get("source") == "clouds.yaml":
        overrides = {}  # the entry only repeats what the file says
    factory = _SessionFactory()
    try:
        if conf.get("cloud"):
            from cm_plugins.openstack.clouds import config_file

            path = conf.get("file") or config_file()
            if path is None:
                raise ConfigError(f"cloud '{name}' names clouds.yaml cloud '{conf['cloud']}', but no clouds.yaml "
                                  "was found (set OS_CLIENT_CONFIG_FILE)")
            loader = openstack.config.OpenStackConfig(config_files=[str(path)], load_envvars=False, app_name="cm",
                                                      session_constructor=factory)
            region = loader.get_one(cloud=str(conf["cloud"]), **overrides)
        else:
            loader = openstack.config.OpenStackConfig(load_yaml_config=False, load_envvars=False, app_name="cm",
                                                      session_constructor=factory)
            region = loader.get_one(**overrides)
    except CmError:
        raise
    except os_exc.ConfigException as exc:
        raise ConfigError(f"cloud '{name}': {scrub(str(exc), secrets_of(conf))}") from None
    except ks_exc.MissingRequiredOptions as exc:
        missing = ", ".join(o.dest for o in exc.options)
        raise ConfigError(f"cloud '{name}' lacks {missing} in its configuration") from None
    except ks_exc.NoMatchingPlugin as exc:
        raise ConfigError(f"cloud '{name}': unknown auth_type '{exc.name}'") from None
    _check_user(name, region.config)
    for key, value in RETRY_DEFAULTS.items():
        if region.config.get(key) is None:
            region.config[key] = value
    if region.config.get("api_timeout") is None:
        region.config["api_timeout"] = API_TIMEOUT
    factory.connect_retries = int(region.config["connect_retries"])
    return region


def _check_user(name: str, config: dict[str, Any]) -> None:
    """Password auth without a user: keystoneauth would send it anyway and the cloud answer 401
    ("rejected the credentials"), which hides that the configuration is incomplete."""
    auth = config.get("auth") if isinstance(config.get("auth"), dict) else {}
    if str(config.get("auth_type") or "password") in PASSWORD_AUTH and not (auth.get("username") or auth.get("user_id")):
        raise ConfigError(f"cloud '{name}' lacks username (or user_id) in its configuration")


def connect(name: str, conf: dict[str, Any]) -> Any:
    """A Connection to the cloud (it authenticates on first use)."""
    region = cloud_region(name, conf)
    return openstack.connection.Connection(config=region, strict_proxies=False)


# -- errors ------------------------------------------------------------------------------------------
_QUOTA = re.compile(r"quota|over ?limit|exceed", re.IGNORECASE)


_UNREACHABLE = re.compile(r"Failed to establish a new connection|Connection refused|timed out|Max retries|"
                          r"Name or service not known|Temporary failure in name resolution|Connection aborted|"
                          r"RemoteDisconnected|Unable to establish connection", re.IGNORECASE)
_REASONS = (("refused", "connection refused"), ("timed out", "timed out"), ("name or service", "unknown host"),
            ("name resolution", "unknown host"), ("aborted", "connection dropped"),
            ("remotedisconnected", "connection dropped"))


def _unreachable(detail: str) -> str:
    """'URL: reason' of a connection failure, without urllib3's nested reprs."""
    url = re.search(r"https?://[^\s'\"]+", detail)
    port = re.search(r"host='([^']+)', port=(\d+)", detail)
    where = url.group(0).rstrip(":.,)") if url else (f"{port.group(1)}:{port.group(2)}" if port else "")
    reason = next((text for key, text in _REASONS if key in detail.lower()), "no answer")
    return f"{where}: {reason}" if where else reason


def _detail(exc: BaseException) -> str:
    """The cloud's own message, without URLs and request ids."""
    details = getattr(exc, "details", None)
    text = str(details) if details else str(getattr(exc, "message", "") or exc)
    text = re.sub(r"\s*\(Request-ID: [^)]*\)", "", text)
    text = re.sub(r"\s*\(HTTP \d{3}\)", "", text)
    return " ".join(text.split())


def translate(exc: BaseException, cloud: str, doing: str, secrets: Iterable[str] = ()) -> CmError:
    """The cm error (one line, no secrets) for an SDK or keystoneauth exception."""
    what = f"cloud '{cloud}'" + (f" could not {doing}" if doing else "")
    status = getattr(exc, "status_code", None) or getattr(exc, "http_status", None)
    detail = scrub(_detail(exc), secrets)
    if isinstance(exc, CmError):
        return exc
    if isinstance(exc, (ks_exc.Unauthorized, ks_exc.http.Unauthorized)) or status == 401:
        return AuthError(f"cloud '{cloud}' rejected the credentials (HTTP 401); check the password, token or "
                         "application credential")
    if isinstance(exc, ks_exc.MissingRequiredOptions):
        missing = ", ".join(o.dest for o in exc.options)
        return ConfigError(f"cloud '{cloud}' lacks {missing} in its configuration")
    if isinstance(exc, (ks_exc.ConnectFailure, ks_exc.ConnectTimeout, ks_exc.ConnectionError)) or (
            isinstance(exc, ks_exc.DiscoveryFailure) and _UNREACHABLE.search(detail)):
        return ProviderError(f"{what}: cannot reach the cloud ({_unreachable(detail)})")
    if isinstance(exc, ks_exc.DiscoveryFailure):
        return ProviderError(f"{what}: {detail}")
    if isinstance(exc, (ks_exc.EndpointNotFound, os_exc.EndpointNotFound)):
        return ProviderError(f"{what}: the cloud offers no such service ({detail})")
    if status is not None:
        if status in (403, 409, 413) and _QUOTA.search(detail):
            return QuotaExceeded(f"{what}: quota exceeded: {detail}")
        if status == 429:
            return Throttled(f"{what}: the cloud asks to slow down (HTTP 429, retried): {detail}")
        if status == 404:
            return NotFound(f"{what}: not found: {detail}")
        if status == 409:
            return Conflict(f"{what}: {detail}")
        if status == 403:
            return AuthError(f"{what}: forbidden: {detail}")
        if status >= 500:
            return ProviderError(f"{what}: the cloud failed (HTTP {status}, retried): {detail}")
        return ProviderError(f"{what}: {detail} (HTTP {status})")
    if isinstance(exc, (os_exc.SDKException, ks_exc.ClientException)):
        return ProviderError(f"{what}: {detail}")
    return ProviderError(f"{what}: {type(exc).__name__}: {detail}")


def translated(doing: str) -> Callable[[F], F]:
    """Provider method decorator: SDK errors become cm errors naming the cloud, secrets masked."""
    def wrap(method: F) -> F:
        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except CmError as exc:
                if self.secrets:
                    exc.args = tuple(scrub(str(a), self.secrets) for a in exc.args)
                raise
            except (os_exc.SDKException, ks_exc.ClientException) as exc:
                raise translate(exc, self.name, doing, self.secrets) from None
        return call  # type: ignore[return-value]
    return wrap

"""Where the NATS server is and how to log in: URL, credentials, TLS — never shown.

A NATS URL is ``nats://[USER:PASSWORD@ | TOKEN@]HOST[:PORT][,HOST2[:PORT]...][?OPTIONS]``
(``tls://`` requires TLS). Options: ``creds=FILE`` (a ``.creds`` file: JWT + nkey
seed), ``nkey=FILE`` (an nkey seed file), ``ca=FILE``, ``cert=FILE``, ``key=FILE``
(TLS: trusted CAs, client certificate and key).

What the URL does not say comes from the environment: ``FASTFEED_NATS_USER``,
``FASTFEED_NATS_PASSWORD``, ``FASTFEED_NATS_TOKEN``, ``FASTFEED_NATS_CREDS``,
``FASTFEED_NATS_NKEY``, ``FASTFEED_NATS_CA``, ``FASTFEED_NATS_CERT``,
``FASTFEED_NATS_KEY``.

Passwords and tokens never leave this module in clear: :attr:`NatsConfig.display_url`
shows ``***`` in their place, and :meth:`NatsConfig.mask` scrubs them (and any
``user:password@`` in a URL) from error texts.
"""
from __future__ import annotations

import os
import re
import ssl
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from ..errors import RelayConfigError
from ..transport.masking import mask_url

__all__ = ["NatsConfig", "is_nats_url", "mask_nats_url", "ENV_PREFIX", "SCHEMES"]

ENV_PREFIX = "FASTFEED_NATS_"
SCHEMES = ("nats", "tls")
_FILE_OPTIONS = ("creds", "nkey", "ca", "cert", "key")


def is_nats_url(url: Any) -> bool:
    """True for ``nats://`` and ``tls://`` URLs (the relay's), false for ``ws(s)://``."""
    return isinstance(url, str) and url.split("://", 1)[0].lower() in SCHEMES and "://" in url


def mask_nats_url(text: str) -> str:
    """``text`` with the credentials of every ``nats://user:pass@`` / ``token@`` masked
    (the transport's one masking function)."""
    return mask_url(text)


@dataclass(frozen=True)
class NatsConfig:
    """A parsed NATS URL plus credentials and TLS settings (secrets kept out of ``repr``)."""

    servers: tuple[str, ...]  # nats://host:port, no credentials
    tls_required: bool = False
    user: Optional[str] = field(default=None, repr=False)
    password: Optional[str] = field(default=None, repr=False)
    token: Optional[str] = field(default=None, repr=False)
    creds_file: Optional[str] = None
    nkey_file: Optional[str] = None
    ca_file: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    ssl_context: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_url(cls, url: str, *, env: Optional[Mapping[str, str]] = None,
                 ssl_context: Any = None) -> "NatsConfig":
        """Parse ``url``; fill what it lacks from ``FASTFEED_NATS_*`` in ``env``
        (default ``os.environ``). ``ssl_context``: a TLS context to use as is (passed
        through to the client). Raises :class:`RelayConfigError` (never showing secrets)."""
        env = os.environ if env is None else env
        if not is_nats_url(url):
            raise RelayConfigError(f"not a nats:// or tls:// URL: {mask_nats_url(str(url))!r}")
        scheme, rest = url.split("://", 1)
        rest, _, query = rest.partition("?")
        netloc = rest.split("/", 1)[0]
        user = password = token = None
        if "@" in netloc:
            userinfo, netloc = netloc.rsplit("@", 1)
            u, sep, p = userinfo.partition(":")
            u, p = urllib.parse.unquote(u), urllib.parse.unquote(p)
            if sep:
                user, password = u, p
            elif u:
                token = u
        hosts = []
        for h in netloc.split(","):
            h = h.strip()
            if not h:
                continue
            host, port = _split_host_port(h, url)
            hosts.append(f"nats://{host}:{port}")
        if not hosts:
            raise RelayConfigError(f"no host in NATS URL {mask_nats_url(url)!r}")
        opts = dict(urllib.parse.parse_qsl(query, keep_blank_values=False))
        unknown = sorted(set(opts) - set(_FILE_OPTIONS))
        if unknown:
            raise RelayConfigError(f"unknown option(s) in NATS URL: {', '.join(unknown)} "
                                   f"(known: {', '.join(_FILE_OPTIONS)})")

        def pick(name: str, value: Optional[str]) -> Optional[str]:
            return value if value else (env.get(ENV_PREFIX + name.upper()) or None)

        if user is None and token is None:
            user = pick("user", None)
            password = pick("password", None) if user else None
            token = None if user else pick("token", None)
        cfg = cls(
            servers=tuple(hosts),
            tls_required=scheme.lower() == "tls",
            user=user, password=password, token=token,
            creds_file=pick("creds", opts.get("creds")),
            nkey_file=pick("nkey", opts.get("nkey")),
            ca_file=pick("ca", opts.get("ca")),
            cert_file=pick("cert", opts.get("cert")),
            key_file=pick("key", opts.get("key")),
            ssl_context=ssl_context,
        )
        for name in ("creds_file", "nkey_file", "ca_file", "cert_file", "key_file"):
            path = getattr(cfg, name)
            if path and not os.path.isfile(path):
                raise RelayConfigError(f"NATS {name.replace('_file', '')} file not found: {path}")
        if cfg.creds_file and cfg.nkey_file:
            raise RelayConfigError("give either a creds file or an nkey seed file, not both")
        return cfg

    # ------------------------------------------------------------------ display
    @property
    def display_url(self) -> str:
        """The servers, with ``***@`` where credentials are used (never their values)."""
        cred = "***@" if (self.user or self.token) else ""
        scheme = "tls" if self.tls_required else "nats"
        hosts = ",".join(s.split("://", 1)[1] for s in self.servers)
        return f"{scheme}://{cred}{hosts}"

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.password, self.token) if s)

    def mask(self, text: str) -> str:
        """``text`` with every password/token of this config and URL credentials masked."""
        text = str(text)
        for s in self.secrets:
            text = text.replace(s, "***")
        return mask_nats_url(text)

    def __str__(self) -> str:
        return self.display_url

    # ------------------------------------------------------------------ client options
    def tls_context(self) -> Optional[ssl.SSLContext]:
        """The TLS context: the one given, else one built from ca/cert/key (verifying),
        else a default verifying one for ``tls://``; ``None`` for plain ``nats://``."""
        if self.ssl_context is not None:
            return self.ssl_context
        if not (self.tls_required or self.ca_file or self.cert_file):
            return None
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` (credentials included: never log them)."""
        kw: dict[str, Any] = {"servers": list(self.servers)}
        if self.user:
            kw["user"] = self.user
            kw["password"] = self.password or ""
        elif self.token:
            kw["token"] = self.token
        if self.creds_file:
            kw["user_credentials"] = self.creds_file
        if self.nkey_file:
            kw["nkeys_seed"] = self.nkey_file
        tls = self.tls_context()
        if tls is not None:
            kw["tls"] = tls
        return kw


def _split_host_port(h: str, url: str) -> tuple[str, int]:
    if h.startswith("["):  # [ipv6]:port
        host, _, port_s = h[1:].partition("]")
        port_s = port_s.lstrip(":")
        host = f"[{host}]"
    else:
        host, _, port_s = h.partition(":")
    try:
        port = int(port_s) if port_s else 4222
    except ValueError:
        raise RelayConfigError(f"bad port in NATS URL {mask_nats_url(url)!r}") from None
    if not host or not 0 < port < 65536:
        raise RelayConfigError(f"bad host or port in NATS URL {mask_nats_url(url)!r}")
    return host, port

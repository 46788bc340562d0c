"""Which hosts an HTTP step may call: `http_allow` and `http_deny`, and Baton's own Redis.

A host is resolved once; every address it resolves to is checked, and the request then
goes to a checked address (never to a second lookup of the name, which could answer
differently). An address is refused when a `http_deny` network holds it, unless an
`http_allow` entry names the host or holds the address: allow wins over deny.

The Redis server Baton runs on (from `redis_url`) holds every run's state and the broker's
queues; a request to it is refused whatever the networks say, unless `http_allow` names
that exact endpoint as `host:port` (a hostname, an address or `[v6]:port`).

Pure: no sockets here except the lookup of the Redis host, done once per setting.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from functools import lru_cache
from typing import Final
from urllib.parse import urlsplit

from app.errors import TerminalError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

PRIVATE: Final[tuple[str, ...]] = (
    "0.0.0.0/8",  # unspecified, "this network" (0.0.0.0 reaches the local host)
    "10.0.0.0/8",
    "100.64.0.0/10",  # shared (carrier-grade NAT)
    "127.0.0.0/8",
    "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
    "172.16.0.0/12",
    "192.0.0.0/24",  # IETF protocol assignments
    "192.168.0.0/16",
    "198.18.0.0/15",  # benchmarking
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, broadcast
    "::/128",
    "::1/128",
    "fe80::/10",
    "fec0::/10",  # site-local (deprecated)
    "fc00::/7",  # unique local
    "ff00::/8",  # multicast
)
"""What `private` in `http_deny` names; IPv4 forms embedded in IPv6 are checked as IPv4."""

_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_COMPATIBLE: Final = ipaddress.IPv6Network("::/96")
_ENDPOINT = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>\d{1,5})$")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
_HOSTNAME = re.compile(rf"^(?:\*\.)?{_LABEL}(?:\.{_LABEL})*$")


class HttpConfigError(TerminalError):
    """`http_allow` or `http_deny` holds an entry Baton cannot read."""


class HttpRefused(TerminalError):
    """An HTTP step asked for a host, address, scheme or method it may not use."""


def canonical(address: Address) -> Address:
    """The IPv4 address an IPv6 form carries (mapped, NAT64, compatible), else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64 or (address in _COMPATIBLE and int(address) > 1):
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def normal_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


@dataclass(frozen=True)
class HostPolicy:
    """The parsed `http_allow` / `http_deny` settings and Baton's own Redis endpoint."""

    allow_names: frozenset[str]
    allow_suffixes: tuple[str, ...]
    """From `*.example.com`: `.example.com` (subdomains only, not the name itself)."""
    allow_networks: tuple[Network, ...]
    allow_endpoints: frozenset[tuple[str, int]]
    """(normal host or canonical address text, port) from `host:port` entries."""
    deny_all: bool
    deny_networks: tuple[Network, ...]
    redis_addresses: frozenset[Address]
    redis_port: int | None

    def check(self, host: str, port: int, addresses: list[Address]) -> None:
        """Refuse (HttpRefused) unless every address of `host` may be called on `port`."""
        name = normal_host(host)
        for address in addresses:
            reason = self._refusal(name, port, canonical(address))
            if reason:
                raise HttpRefused(f"host '{host}' (address {address}, port {port}) is "
                                  f"refused: {reason}")

    def _refusal(self, name: str, port: int, address: Address) -> str | None:
        if (name, port) in self.allow_endpoints or (str(address), port) in self.allow_endpoints:
            return None
        if self._is_redis(port, address):
            return ("it is the Redis server Baton runs on; only an exact "
                    "'host:port' entry in BATON_HTTP_ALLOW opens it")
        if (name in self.allow_names or name.endswith(self.allow_suffixes)
                or any(address in net for net in self.allow_networks
                       if net.version == address.version)):
            return None
        if self.deny_all:
            return "BATON_HTTP_DENY is '*' and BATON_HTTP_ALLOW does not name it"
        for net in self.deny_networks:
            if net.version == address.version and address in net:
                return (f"BATON_HTTP_DENY refuses {net} (add the host or network to "
                        "BATON_HTTP_ALLOW to call it)")
        return None

    def _is_redis(self, port: int, address: Address) -> bool:
        if port != self.redis_port:
            return False
        if address in self.redis_addresses:
            return True
        # a Redis on the local host is also reached through any loopback or unspecified
        # address of this host
        local = any(a.is_loopback or a.is_unspecified for a in self.redis_addresses)
        return local and (address.is_loopback or address.is_unspecified)


def policy_for(allow: str, deny: str, redis_url: str) -> HostPolicy:
    """The host policy of these settings (parsed once per distinct value)."""
    return _policy(allow, deny, redis_url)


@lru_cache(maxsize=8)
def _policy(allow: str, deny: str, redis_url: str) -> HostPolicy:
    names: set[str] = set()
    suffixes: list[str] = []
    allow_networks: list[Network] = []
    endpoints: set[tuple[str, int]] = set()
    for entry in _entries(allow):
        network = _network(entry)
        endpoint = _ENDPOINT.match(entry)
        if network is not None:
            allow_networks.append(network)
        elif endpoint is not None:
            endpoints.add(_endpoint(entry, endpoint))
        elif _HOSTNAME.match(entry):
            if entry.startswith("*."):
                suffixes.append(entry[1:])
            else:
                names.add(entry)
        else:
            raise HttpConfigError(
                f"BATON_HTTP_ALLOW: '{entry}' is not a hostname, '*.suffix', network "
                "(CIDR) or host:port")
    deny_all = False
    deny_networks: list[Network] = []
    for entry in _entries(deny):
        if entry == "*":
            deny_all = True
        elif entry == "private":
            deny_networks.extend(ipaddress.ip_network(n) for n in PRIVATE)
        else:
            network = _network(entry)
            if network is None:
                raise HttpConfigError(
                    f"BATON_HTTP_DENY: '{entry}' is not 'private', '*' or a network (CIDR)")
            deny_networks.append(network)
    redis_addresses, redis_port = _redis_endpoint(redis_url)
    return HostPolicy(frozenset(names), tuple(suffixes), tuple(allow_networks),
                      frozenset(endpoints), deny_all, tuple(deny_networks),
                      redis_addresses, redis_port)


def _entries(setting: str) -> list[str]:
    return [normal_host(e) for e in setting.split(",") if e.strip()]


def _network(entry: str) -> Network | None:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


def _endpoint(entry: str, match: re.Match[str]) -> tuple[str, int]:
    port = int(match["port"])
    if not 0 < port < 65536:
        raise HttpConfigError(f"BATON_HTTP_ALLOW: '{entry}' has no valid port")
    host = match["v6"] or match["host"]
    try:
        return str(canonical(ipaddress.ip_address(host))), port
    except ValueError:
        if match["v6"] or not _HOSTNAME.match(host) or host.startswith("*."):
            raise HttpConfigError(
                f"BATON_HTTP_ALLOW: '{entry}' is not a host:port Baton can read") from None
        return host, port


def _redis_endpoint(redis_url: str) -> tuple[frozenset[Address], int | None]:
    """The addresses and port of Baton's Redis (none for a Unix socket)."""
    parts = urlsplit(redis_url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        return frozenset(), None
    port = parts.port or 6379
    try:
        return frozenset({canonical(ipaddress.ip_address(parts.hostname))}), port
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except OSError:
        found = []
    addresses = {canonical(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
                 for info in found}
    if not addresses:  # unresolvable now: keep every local form refused at least
        addresses = {ipaddress.IPv4Address("127.0.0.1")}
    return frozenset(addresses), port

"""Setting values parsed and checked: a TOML value or an environment string against its
field's type, and the values whose form types cannot express (host:port addresses, Elasticsearch
host URLs and index names, networks, nameservers, sampling rates, raw field patterns).

Each is a pure function: it raises `ConfigError` naming the key the value came from
(`parse_es_host`: `ValueError`, its callers name the key), so `flowd check-config` and the
components that parse a table again at start or on SIGHUP say the same thing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import re
import socket
from typing import TYPE_CHECKING, Any, get_args, get_origin
from urllib.parse import urlsplit

import orjson

from flowd.errors import ConfigError

if TYPE_CHECKING:
    from flowd.config import ElasticsearchSettings

ALL_RAW_FIELDS = "*"
RAW_NAMESPACES = ("netflow.", "sflow.")
"""Where the decoders put the exporter's own fields, by IANA or sFlow name (design.md section 4)."""
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def coerce_value(key: str, value: Any, kind: Any) -> Any:
    """A TOML value or an environment string, checked against the field's type."""
    origin = get_origin(kind)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""), 0)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if kind is float:
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = float(value.strip())
        # nan and inf (TOML literals, and strings float() takes) would pass every range check:
        # nan compares false with everything, so a nan TTL or interval is neither negative nor 0.
        if number is None or not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin is list:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return list(value)
        raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
    if origin is dict:
        if isinstance(value, str):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError as error:
                raise ConfigError(f"{key}: expected a JSON object, got {value!r}") from error
        item_kind = get_args(kind)[1]
        if isinstance(value, dict) and all(type(v) is item_kind for v in value.values()):
            return {str(k): v for k, v in value.items()}
        noun = "integers" if item_kind is int else "strings"
        raise ConfigError(f"{key}: expected a table of {noun}, got {value!r}")
    raise ConfigError(f"{key}: unsupported setting type {kind!r}")  # pragma: no cover


def split_address(address: str, key: str = "address") -> tuple[str, int]:
    """ "host:port" or "[v6]:port" -> (host, port); ConfigError naming `key` when malformed."""
    text = address.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
    if not sep or not host or ("[" not in text and ":" in host):
        raise ConfigError(f"{key}: {address!r} is not host:port (IPv6 as [addr]:port)")
    try:
        port = int(port_text)
    except ValueError as error:
        raise ConfigError(f"{key}: bad port in {address!r}") from error
    check_port(key, port)
    return host, port


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_port(key: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise ConfigError(f"{key}: port {port} is outside 0-65535")


ES_DEFAULT_PORT = 9200


def parse_es_host(url: str, *, tls: bool) -> tuple[str, str, int, str]:
    """`host`, `host:port` (ElastiFlow's ES_HOST form, https when `tls`) or
    `scheme://host[:port][/prefix]` -> (scheme, host, port, path prefix). ValueError when it is
    none of those, or carries credentials: they belong in `elasticsearch.user`/`password` or
    `api_key`, which are masked in check-config and never logged, where a URL is printed as it is
    (and the transport would not send them). The message never repeats such a URL."""
    text = url.strip()
    if "://" not in text:
        text = ("https://" if tls else "http://") + text
    parts = urlsplit(text)
    if "@" in text:
        # Anywhere, not only in the netloc urlsplit finds: a password holding / ? or # ends the
        # netloc early, and the rest (the password, the real host) became a path, or a "bad port"
        # message repeating the URL. An @ in a path prefix is written %40.
        scheme = text.partition("://")[0]
        raise ValueError(
            f"{scheme}://…@{text.rpartition('@')[2]}: credentials in a host URL are not used;"
            " set elasticsearch.user and password, or api_key (an @ in a path prefix is written %40)"
        )
    try:
        port = parts.port
    except ValueError as error:  # not a number, or past 65535
        raise ValueError(f"{url!r}: bad port ({error})") from error
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"{url!r} is not http(s)://host[:port][/prefix]")
    return parts.scheme, parts.hostname, port or ES_DEFAULT_PORT, parts.path.rstrip("/")


_INDEX_NAME_FORBIDDEN = frozenset('\\/*?"<>|,# :')
_BYTE_SIZE = re.compile(r"^\d+(\.\d+)?(b|kb?|mb?|gb?|tb?|pb?)$", re.IGNORECASE)
"""Elasticsearch's byte sizes: its parser takes the unit in any case, with or without the b."""
_TIME_VALUE = re.compile(r"^\d+(d|h|m|s|ms|micros|nanos)$", re.IGNORECASE)
MAX_INDEX_NAME_BYTES = 255


def check_elasticsearch(settings: ElasticsearchSettings) -> None:
    """The hosts and index names: checked at load, and again by `flowd setup` after its options
    (`--es`, `--namespace`) replace the configured ones."""
    check_index_names(settings)
    for host in settings.hosts:
        try:
            parse_es_host(host, tls=settings.tls)
        except ValueError as error:
            raise ConfigError(f"elasticsearch.hosts: {error}") from error


def check_index_names(settings: ElasticsearchSettings) -> None:
    """`<data_stream>-<namespace>` is the index every document is sent to: Elasticsearch's index
    name rules (lower case; none of \\ / * ? " < > | , # : or space; not starting with - _ +; at
    most 255 bytes) checked at load, where a bad name would fail every `_bulk` item."""
    stream = f"{settings.data_stream}-{settings.namespace}"
    for key, value in (
        ("elasticsearch.data_stream", settings.data_stream),
        ("elasticsearch.namespace", settings.namespace),
    ):
        if not value or value != value.lower() or _INDEX_NAME_FORBIDDEN.intersection(value):
            raise ConfigError(
                f"{key}: {value!r} cannot be part of an index name"
                ' (non-empty, lower case, none of \\ / * ? " < > | , # : or space)'
            )
    if stream.startswith(("-", "_", "+")) or len(stream.encode()) > MAX_INDEX_NAME_BYTES:
        raise ConfigError(
            f"elasticsearch.data_stream: {stream!r} cannot name an index (it may not start with - _ +"
            f" or be over {MAX_INDEX_NAME_BYTES} bytes)"
        )
    if not _BYTE_SIZE.match(settings.rollover_max_size):
        raise ConfigError(
            f"elasticsearch.rollover_max_size: {settings.rollover_max_size!r} is not a byte size like 50gb"
        )
    if not _TIME_VALUE.match(settings.rollover_max_age):
        raise ConfigError(f"elasticsearch.rollover_max_age: {settings.rollover_max_age!r} is not a time like 1d or 12h")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_NETWORK_NAME = 256


def parse_networks(networks: list[str], key: str) -> tuple[Network, ...]:
    """Networks (or single addresses) as the operator wrote them; `ConfigError` names `key`."""
    parsed = []
    for text in networks:
        try:
            parsed.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError as error:
            raise ConfigError(f"{key}: {text!r} is not a network: {error}") from error
    return tuple(parsed)


def parse_network_names(names: dict[str, str], key: str) -> list[tuple[Network, str]]:
    """Names of networks (`enrich.network_names`, `enrich.exporter_names`) checked: each network
    with its name, stripped of spaces; `ConfigError` names `key`."""
    networks = parse_networks(list(names), key)
    parsed = []
    for network, name in zip(networks, names.values(), strict=True):
        if not name.strip() or len(name) > MAX_NETWORK_NAME:
            raise ConfigError(f"{key}: the name of {network} must be 1 to {MAX_NETWORK_NAME} characters")
        parsed.append((network, name.strip()))
    return parsed


def parse_address_key(text: str, setting: str, form: str, largest: int = 2**32 - 1) -> tuple[str, int]:
    """Parse "address:number" (an IPv6 address bracketed or bare) as documents write the address;
    `ConfigError` names `setting` and the `form` expected."""
    address_text, sep, number = text.rpartition(":")
    if address_text.startswith("[") and address_text.endswith("]"):
        address_text = address_text[1:-1]
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError:
        address = None
    if not sep or address is None or not (number.isascii() and number.isdigit()) or int(number) > largest:
        raise ConfigError(f"{setting}: key {text!r} is not {form}")
    if address.version == 6:  # as the decoders write it: ::ffff:10.1.1.5, not ::ffff:a01:105
        return socket.inet_ntop(socket.AF_INET6, address.packed), int(number)
    return str(address), int(number)


DNS_PORT = 53


def parse_nameserver(text: str) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port` or a bare IPv6 address -> (address, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if not host:
        raise ConfigError(f"enrich.nameservers: {text!r} has no address")
    try:
        number = int(port) if port else DNS_PORT
    except ValueError as error:
        raise ConfigError(f"enrich.nameservers: bad port in {text!r}") from error
    if not 0 < number < 65536:
        raise ConfigError(f"enrich.nameservers: port out of range in {text!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError as error:  # dnspython queries addresses; a name would time out on every lookup
        raise ConfigError(f"enrich.nameservers: {host!r} is not an IP address") from error
    return host, number


MAX_SAMPLING_RATE = 2**32 - 1
"""The largest rate an exporter can announce (sFlow's and IPFIX samplingInterval are 32 bits)."""


def parse_exporter_rates(key: str, rates: dict[str, int]) -> list[tuple[Network, int]]:
    """`{address or network: rate}` checked; `ConfigError` names `key`."""
    networks = parse_networks(list(rates), key)
    for network, rate in zip(networks, rates.values(), strict=True):
        if type(rate) is not int or not 1 <= rate <= MAX_SAMPLING_RATE:
            raise ConfigError(
                f"{key}: the rate of {network} must be an integer from 1 to {MAX_SAMPLING_RATE}, got {rate!r}"
            )
    return list(zip(networks, rates.values(), strict=True))


def parse_raw_fields(
    patterns: list[str], key: str = "output.raw_fields"
) -> tuple[frozenset[str], tuple[str, ...]] | None:
    """`output.raw_fields` checked: None keeps every raw field, else the exact names and the
    prefixes (`sflow.*` -> `sflow.`) to keep; `ConfigError` names `key`."""
    if ALL_RAW_FIELDS in (pattern.strip() for pattern in patterns):
        return None
    names: set[str] = set()
    prefixes: list[str] = []
    for text in patterns:
        pattern = text.strip()
        stem = pattern.removesuffix("*")
        if not pattern.startswith(RAW_NAMESPACES):
            raise ConfigError(
                f"{key}: {text!r} names no raw field: they are netflow.… (NetFlow v5/v9 and IPFIX alike, "
                'e.g. "netflow.octet_delta_count" or "netflow.*") or sflow.…'
            )
        if "*" in stem or (pattern.endswith("*") and not stem.endswith(".")):
            raise ConfigError(
                f'{key}: {text!r} is not "*", a raw field\'s name (netflow.… or sflow.…) or a prefix ending in ".*"'
            )
        if pattern.endswith("*"):
            prefixes.append(stem)
        else:
            names.add(pattern)
    return frozenset(names), tuple(prefixes)

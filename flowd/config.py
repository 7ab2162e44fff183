"""Settings: one dataclass per TOML section, and `load_settings`: the TOML file, then
FLOWD_<SECTION>_<KEY> variables and ElastiFlow 4.x compatibility names, each value checked
against its field's type, then `validate_settings` for what types cannot express. The value
parsers and checkers themselves live in `config_values.py`."""

from __future__ import annotations

import ipaddress
import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import orjson

from flowd.cgroup import available_cpus
from flowd.config_values import (
    ALL_RAW_FIELDS,
    check_elasticsearch,
    check_port,
    coerce_value,
    join_address,
    parse_address_key,
    parse_exporter_rates,
    parse_nameserver,
    parse_network_names,
    parse_networks,
    parse_raw_fields,
    split_address,
)
from flowd.elastiflow_settings import APPLICATIONS_FILE, INTERFACE_NAMES_FILE, SAMPLING_RATES_FILE, user_settings
from flowd.errors import ConfigError


@dataclass(slots=True)
class ListenSettings:
    netflow: list[str] = field(default_factory=lambda: ["0.0.0.0:2055"])
    """host:port (IPv6 as [addr]:port) for NetFlow v5/v9 (any version is accepted on any port)."""
    ipfix: list[str] = field(default_factory=lambda: ["0.0.0.0:4739"])
    sflow: list[str] = field(default_factory=lambda: ["0.0.0.0:6343"])
    ipfix_tcp: list[str] = field(default_factory=lambda: ["0.0.0.0:4739"])
    receive_buffer_bytes: int = 32 * 1024 * 1024
    queue_size: int = 16_384
    """Datagrams held between receive and decode (as ElastiFlow's UDP_QUEUE_SIZE, in packets);
    ingress drops (and counts) beyond it. 16,384 datagrams of 1,400 bytes are about 23 MB."""
    batch_size: int = 64
    """Datagrams per batch handed from receive to decode."""
    batch_delay_ms: float = 50.0
    """How long a partial batch waits for more datagrams before it is decoded (as Logstash's
    pipeline.batch.delay). A batch has fixed costs of about a millisecond, so decoding every
    datagram as it came kept a worker busy at a few thousand datagrams a second; 0 decodes at once."""
    workers: int = 0
    """Worker processes; 0 means one per core."""
    allowed_exporters: list[str] = field(default_factory=list)
    """CIDR networks allowed to send; empty allows all."""


@dataclass(slots=True)
class TemplateSettings:
    path: str = "./flowd-data/templates.json"
    persist_interval_s: float = 60.0
    ttl_s: float = 86_400.0
    max_per_exporter: int = 4096
    max_total: int = 262_144


@dataclass(slots=True)
class OutputSettings:
    directory: str = "./flowd-data"
    """NDJSON files go here when no Elasticsearch host is configured (the embedded default)."""
    rotate_bytes: int = 256 * 1024 * 1024
    discard: bool = False
    """Build every document and `_bulk` body, then drop them: for measuring the collector
    without storage (`flowd bench --sink discard`). Takes precedence over files and Elasticsearch."""
    raw_fields: list[str] = field(default_factory=lambda: [ALL_RAW_FIELDS])
    """The raw protocol fields flow documents keep: "*" all; [] none but the exporter's identity
    (ElastiFlow's KEEP_ORIG_DATA=false); or names (`netflow.tcp_control_bits`) and prefixes
    (`sflow.*`). Options, counter and drop documents keep theirs: they are what those hold."""


@dataclass(slots=True)
class EnrichSettings:
    geoip_city_db: str = ""
    geoip_country_db: str = ""
    geoip_asn_db: str = ""
    geoip_isp_db: str = ""
    geoip_cache_size: int = 65_536
    geoip_lookup: bool = True
    asn_lookup: bool = True
    oui_lookup: bool = True
    oui_path: str = ""
    """IEEE registry files (Debian's ieee-data: /usr/share/ieee-data); empty: search the usual places."""
    services_path: str = "/etc/services"
    resolve_ip2host: str = "false"
    """ElastiFlow values: false, true (all), exporters, endpoints."""
    nameservers: list[str] = field(default_factory=list)
    """host or host:port; empty uses the system resolver configuration."""
    dns_timeout_s: float = 2.0
    dns_deadline_ms: float = 50.0
    """How long a flow waits for the first lookup of an address before it goes out without the name."""
    dns_concurrency: int = 64
    dns_hit_cache_size: int = 25_000
    dns_hit_cache_ttl_s: float = 900.0
    dns_failed_cache_size: int = 75_000
    dns_failed_cache_ttl_s: float = 3_600.0
    internal_networks: list[str] = field(
        default_factory=lambda: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]
    )
    community_id_seed: int = 0
    network_names: dict[str, str] = field(default_factory=dict)
    """Network -> name (a site, a building, a customer): `source.geo.name`/`destination.geo.name`."""
    exporter_names: dict[str, str] = field(default_factory=dict)
    """Exporter address or network -> `observer.name`."""
    interface_names: dict[str, str] = field(default_factory=dict)
    """"exporter_ip:ifindex" -> name, configured by the operator."""
    endpoint_applications: dict[str, str] = field(default_factory=dict)
    """"server_ip:port" -> `network.application` of flows to or from it, over any other name."""
    sampling_rates: dict[str, int] = field(default_factory=dict)
    """Exporter address or network -> the rate its flows were sampled at, replacing what it announces."""
    default_sampling_rates: dict[str, int] = field(default_factory=dict)
    """Exporter address or network -> the rate of its flows that announce none."""


@dataclass(slots=True)
class ElasticsearchSettings:
    hosts: list[str] = field(default_factory=list)
    """Empty: no cluster, write NDJSON files instead."""
    user: str = ""
    password: str = ""
    api_key: str = ""
    tls: bool = False
    verify: bool = True
    ca_file: str = ""
    data_stream: str = "flows-flowd"
    namespace: str = "default"
    retention_days: int = 30
    rollover_max_size: str = "50gb"
    rollover_max_age: str = "1d"
    batch_docs: int = 5_000
    batch_bytes: int = 10 * 1024 * 1024
    flush_interval_s: float = 1.0
    max_in_flight: int = 4
    gzip: bool = False
    retry_max_s: float = 30.0
    spool_dir: str = "./flowd-data/spool"
    spool_max_bytes: int = 1024 * 1024 * 1024
    dead_letter_path: str = "./flowd-data/dead-letter.ndjson"
    dead_letter_max_bytes: int = 256 * 1024 * 1024
    """The dead-letter file's cap: past it, rejected documents are counted, not written. A mapping
    conflict rejects every flow, and an unbounded file filled the disk the spool needs."""


@dataclass(slots=True)
class MetricsSettings:
    address: str = "127.0.0.1:9107"
    """host:port of /metrics, /healthz and /readyz; port 0 turns the endpoint off."""
    status_interval_s: float = 10.0
    """Seconds between summary log lines when stderr is not a terminal (0: never)."""
    exporter_label_limit: int = 1000
    """Distinct exporters named in metric labels; the rest are counted as "other"."""


@dataclass(slots=True)
class Settings:
    listen: ListenSettings = field(default_factory=ListenSettings)
    templates: TemplateSettings = field(default_factory=TemplateSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    enrich: EnrichSettings = field(default_factory=EnrichSettings)
    elasticsearch: ElasticsearchSettings = field(default_factory=ElasticsearchSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    shutdown_grace_s: float = 30.0


# --- loading ---------------------------------------------------------------------------------

SECTIONS: tuple[str, ...] = ("listen", "templates", "output", "enrich", "elasticsearch", "metrics")
"""TOML tables, in the order check-config prints them; top-level keys (shutdown_grace_s) come first."""
ENV_PREFIX = "FLOWD_"
ELASTIFLOW_PREFIX = "ELASTIFLOW_"
SECRET_KEYS = frozenset({"elasticsearch.password", "elasticsearch.api_key"})
RESOLVE_IP2HOST_VALUES = ("false", "true", "exporters", "endpoints")


@dataclass(slots=True)
class LoadedSettings:
    """The effective settings and, for every key ("section.key"), where its value came from."""

    settings: Settings
    sources: dict[str, str]


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> LoadedSettings:
    """defaults < TOML file < ELASTIFLOW_* < FLOWD_<SECTION>_<KEY>; raises ConfigError naming the key."""
    env = os.environ if environ is None else environ
    settings = Settings()
    sources = {key: "default" for key in _all_keys()}
    if path is not None:
        _apply_toml(settings, sources, Path(path))
    _apply_elastiflow(settings, sources, env)
    _apply_flowd_env(settings, sources, env)
    validate_settings(settings)
    return LoadedSettings(settings, sources)


def _target(settings: Settings, section: str) -> Any:
    return settings if section == "" else getattr(settings, section)


def _field_types(section: str) -> dict[str, Any]:
    cls = Settings if section == "" else get_type_hints(Settings)[section]
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls) if section != "" or f.name not in SECTIONS}


def _all_keys() -> list[str]:
    keys = [name for name in _field_types("")]
    for section in SECTIONS:
        keys.extend(f"{section}.{name}" for name in _field_types(section))
    return keys


def _split_key(key: str) -> tuple[str, str]:
    section, _, name = key.rpartition(".")
    return section, name


def _set(settings: Settings, sources: dict[str, str], key: str, value: Any, source: str) -> None:
    section, name = _split_key(key)
    setattr(_target(settings, section), name, coerce_value(key, value, _field_types(section)[name]))
    sources[key] = source


def _apply_toml(settings: Settings, sources: dict[str, str], path: Path) -> None:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"cannot read configuration file {path}: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from error
    except UnicodeDecodeError as error:  # TOML is UTF-8; a file saved in Latin-1 is not
        raise ConfigError(f"{path}: not UTF-8 (byte {error.start}): {error.reason}") from error
    source = f"toml:{path}"
    top = _field_types("")
    for name, value in document.items():
        if name in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{name}: expected a table")
            known = _field_types(name)
            for key, item in value.items():
                if key not in known:
                    raise ConfigError(f"{name}.{key}: unknown key in {path}")
                _set(settings, sources, f"{name}.{key}", item, source)
        elif name in top:
            _set(settings, sources, name, value, source)
        else:
            raise ConfigError(f"{name}: unknown key in {path}")


def _apply_flowd_env(settings: Settings, sources: dict[str, str], env: Mapping[str, str]) -> None:
    """FLOWD_<SECTION>_<KEY>; FLOWD_<KEY> for top-level keys. Variables naming no section and no
    top-level key (FLOWD_CORPUS, FLOWD_TEST_*) belong to other tools and are left alone."""
    top = _field_types("")
    for variable in sorted(env):
        if not variable.startswith(ENV_PREFIX):
            continue
        rest = variable[len(ENV_PREFIX) :].lower()
        section, _, name = rest.partition("_")
        if section in SECTIONS:
            if name not in _field_types(section):
                raise ConfigError(f"{variable}: unknown key {section}.{name}")
            _set(settings, sources, f"{section}.{name}", env[variable], f"env:{variable}")
        elif rest in top:
            _set(settings, sources, rest, env[variable], f"env:{variable}")


# ElastiFlow 4.x (logstash.service.d/elastiflow.conf, docker-compose.yml): variable -> key.
ELASTIFLOW_SIMPLE: dict[str, str] = {
    "GEOIP_CACHE_SIZE": "enrich.geoip_cache_size",
    "GEOIP_LOOKUP": "enrich.geoip_lookup",
    "ASN_LOOKUP": "enrich.asn_lookup",
    "OUI_LOOKUP": "enrich.oui_lookup",
    "RESOLVE_IP2HOST": "enrich.resolve_ip2host",
    "NAMESERVER": "enrich.nameservers",
    "DNS_HIT_CACHE_SIZE": "enrich.dns_hit_cache_size",
    "DNS_HIT_CACHE_TTL": "enrich.dns_hit_cache_ttl_s",
    "DNS_FAILED_CACHE_SIZE": "enrich.dns_failed_cache_size",
    "DNS_FAILED_CACHE_TTL": "enrich.dns_failed_cache_ttl_s",
    "ES_USER": "elasticsearch.user",
    "ES_PASSWD": "elasticsearch.password",
    "ES_SSL_ENABLE": "elasticsearch.tls",
    "ES_SSL_VERIFY": "elasticsearch.verify",
}
KEEP_ORIG_DATA = ELASTIFLOW_PREFIX + "KEEP_ORIG_DATA"
GEOIP_DB_PATH = ELASTIFLOW_PREFIX + "GEOIP_DB_PATH"
USER_SETTINGS_PATH = ELASTIFLOW_PREFIX + "USER_SETTINGS_PATH"
ELASTIFLOW_INPUTS: dict[str, str] = {
    # ElastiFlow input prefix (ELASTIFLOW_<prefix>_IPV4_PORT...) -> listen key
    "NETFLOW": "listen.netflow",
    "SFLOW": "listen.sflow",
    "IPFIX_UDP": "listen.ipfix",
    "IPFIX_TCP": "listen.ipfix_tcp",
}
ELASTIFLOW_UDP_OPTIONS: dict[str, str] = {
    # One value per protocol in ElastiFlow; flowd has one pipeline, so the largest value set wins.
    "UDP_WORKERS": "listen.workers",
    "UDP_QUEUE_SIZE": "listen.queue_size",
    "UDP_RCV_BUFF": "listen.receive_buffer_bytes",
}


def _apply_elastiflow(settings: Settings, sources: dict[str, str], env: Mapping[str, str]) -> None:
    for suffix, key in ELASTIFLOW_SIMPLE.items():
        variable = ELASTIFLOW_PREFIX + suffix
        if variable in env:
            _set(settings, sources, key, env[variable], f"env:{variable}")
    hosts = [
        (variable, env[variable])
        for variable in ("ELASTIFLOW_ES_HOST", "ELASTIFLOW_ES_HOST_1", "ELASTIFLOW_ES_HOST_2", "ELASTIFLOW_ES_HOST_3")
        if env.get(variable, "").strip()
    ]
    if hosts:
        value = ",".join(host for _, host in hosts)
        _set(settings, sources, "elasticsearch.hosts", value, "env:" + "+".join(v for v, _ in hosts))
    geoip_directory = env.get(GEOIP_DB_PATH, "").strip()
    if geoip_directory:  # ElastiFlow's file names in that directory
        for key, name in (("enrich.geoip_city_db", "GeoLite2-City.mmdb"), ("enrich.geoip_asn_db", "GeoLite2-ASN.mmdb")):
            _set(settings, sources, key, str(Path(geoip_directory) / name), f"env:{GEOIP_DB_PATH}")
    user_directory = env.get(USER_SETTINGS_PATH, "").strip()
    if user_directory:
        names, rates, applications = user_settings(user_directory)
        for key, table, file in (
            ("enrich.interface_names", names, INTERFACE_NAMES_FILE),
            ("enrich.default_sampling_rates", rates, SAMPLING_RATES_FILE),
            ("enrich.endpoint_applications", applications, APPLICATIONS_FILE),
        ):
            if table:  # added to the TOML file's table; the files win for the same key
                section, name = _split_key(key)
                merged = {**getattr(_target(settings, section), name), **table}
                _set(settings, sources, key, merged, f"env:{USER_SETTINGS_PATH} ({file})")
    keep = env.get(KEEP_ORIG_DATA)
    if keep is not None:  # ElastiFlow's switch for its netflow/ipfix/sflow objects: all or none
        kept = coerce_value(KEEP_ORIG_DATA, keep, bool)
        _set(settings, sources, "output.raw_fields", [ALL_RAW_FIELDS] if kept else [], f"env:{KEEP_ORIG_DATA}")
    for prefix, key in ELASTIFLOW_INPUTS.items():
        _apply_elastiflow_input(settings, sources, env, prefix, key)
    for option, key in ELASTIFLOW_UDP_OPTIONS.items():
        chosen: tuple[str, int] | None = None
        for family in ("NETFLOW", "SFLOW", "IPFIX"):
            variable = f"{ELASTIFLOW_PREFIX}{family}_{option}"
            if variable in env:
                value = coerce_value(variable, env[variable], int)
                if chosen is None or value > chosen[1]:
                    chosen = (variable, value)
        if chosen is None:
            continue
        chosen_variable, chosen_value = chosen
        if key == "listen.workers" and chosen_value > (cpus := available_cpus()):
            # Logstash's pipeline threads; flowd's workers are processes, one per CPU at most.
            source = f"env:{chosen_variable} ({chosen_value}, capped at the {cpus} CPUs flowd may use)"
            _set(settings, sources, key, cpus, source)
        else:
            _set(settings, sources, key, chosen_value, f"env:{chosen_variable}")


def _apply_elastiflow_input(
    settings: Settings, sources: dict[str, str], env: Mapping[str, str], prefix: str, key: str
) -> None:
    """ELASTIFLOW_<P>_IPV4_HOST/_PORT and _IPV6_HOST/_PORT replace that family's address."""
    section, name = _split_key(key)
    current: list[str] = list(getattr(_target(settings, section), name))
    used: list[str] = []
    for family, default_host in (("IPV4", "0.0.0.0"), ("IPV6", "::")):
        host_var = f"{ELASTIFLOW_PREFIX}{prefix}_{family}_HOST"
        port_var = f"{ELASTIFLOW_PREFIX}{prefix}_{family}_PORT"
        if host_var not in env and port_var not in env:
            continue
        ipv6 = family == "IPV6"
        index = next((i for i, a in enumerate(current) if (":" in split_address(a, key)[0]) == ipv6), None)
        host, port = split_address(current[index], key) if index is not None else (default_host, 0)
        if host_var in env:
            host = env[host_var].strip().strip("[]")
        if port_var in env:
            port = coerce_value(port_var, env[port_var], int)
            check_port(port_var, port)
        elif index is None:
            raise ConfigError(f"{port_var}: needed with {host_var}")
        address = join_address(host, port)
        if index is None:
            current.append(address)
        else:
            current[index] = address
        used.extend(v for v in (host_var, port_var) if v in env)
    if used:
        _set(settings, sources, key, current, "env:" + "+".join(used))


# --- validation ------------------------------------------------------------------------------


def validate_settings(settings: Settings) -> None:
    """Checks that types alone cannot express; every message names the key."""
    listen = settings.listen
    bound: dict[tuple[str, tuple[str, int]], str] = {}
    for name in ("netflow", "ipfix", "sflow", "ipfix_tcp"):
        for address in getattr(listen, name):
            host, port = split_address(address, f"listen.{name}")
            try:
                host = str(ipaddress.ip_address(host))
            except ValueError as error:
                raise ConfigError(f"listen.{name}: {host!r} is not an IP address") from error
            where = ("tcp" if name == "ipfix_tcp" else "udp", (host, port))
            if where in bound:  # two sockets on one address: each would hide the other's counts
                raise ConfigError(f"listen.{name}: {address!r} is listed again (listen.{bound[where]})")
            bound[where] = name
    for network in listen.allowed_exporters:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError as error:
            raise ConfigError(f"listen.allowed_exporters: {network!r} is not a network") from error
    split_address(settings.metrics.address, "metrics.address")
    check_elasticsearch(settings.elasticsearch)
    positive: dict[str, float] = {
        "listen.receive_buffer_bytes": listen.receive_buffer_bytes,
        "listen.queue_size": listen.queue_size,
        "listen.batch_size": listen.batch_size,
        "templates.max_per_exporter": settings.templates.max_per_exporter,
        "templates.max_total": settings.templates.max_total,
        "output.rotate_bytes": settings.output.rotate_bytes,
        "enrich.geoip_cache_size": settings.enrich.geoip_cache_size,
        "enrich.dns_concurrency": settings.enrich.dns_concurrency,
        "elasticsearch.batch_docs": settings.elasticsearch.batch_docs,
        "elasticsearch.batch_bytes": settings.elasticsearch.batch_bytes,
        "elasticsearch.max_in_flight": settings.elasticsearch.max_in_flight,
        "metrics.exporter_label_limit": settings.metrics.exporter_label_limit,
    }
    non_negative: dict[str, float] = {
        "listen.workers": listen.workers,
        "listen.batch_delay_ms": listen.batch_delay_ms,
        "templates.persist_interval_s": settings.templates.persist_interval_s,
        "templates.ttl_s": settings.templates.ttl_s,
        "enrich.dns_timeout_s": settings.enrich.dns_timeout_s,
        # 0: no cache, every address asked again (ElastiFlow's DNS_*_CACHE_SIZE, the dns filter's sizes)
        "enrich.dns_hit_cache_size": settings.enrich.dns_hit_cache_size,
        "enrich.dns_failed_cache_size": settings.enrich.dns_failed_cache_size,
        "enrich.dns_deadline_ms": settings.enrich.dns_deadline_ms,
        "elasticsearch.retention_days": settings.elasticsearch.retention_days,
        "elasticsearch.flush_interval_s": settings.elasticsearch.flush_interval_s,
        "elasticsearch.retry_max_s": settings.elasticsearch.retry_max_s,
        "elasticsearch.spool_max_bytes": settings.elasticsearch.spool_max_bytes,
        "elasticsearch.dead_letter_max_bytes": settings.elasticsearch.dead_letter_max_bytes,
        "metrics.status_interval_s": settings.metrics.status_interval_s,
        "shutdown_grace_s": settings.shutdown_grace_s,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be positive, got {value}")
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key}: must not be negative, got {value}")
    for key, value in {
        "enrich.dns_hit_cache_ttl_s": settings.enrich.dns_hit_cache_ttl_s,
        "enrich.dns_failed_cache_ttl_s": settings.enrich.dns_failed_cache_ttl_s,
    }.items():
        if not value > 0:  # an entry must live a while (a size of 0 turns a cache off)
            raise ConfigError(f"{key}: must be more than 0, got {value}")
    for nameserver in settings.enrich.nameservers:
        parse_nameserver(nameserver)
    seed = settings.enrich.community_id_seed
    if not 0 <= seed <= 0xFFFF:
        raise ConfigError(f"enrich.community_id_seed: must be 0 to 65535 (16 bits), got {seed}")
    parse_raw_fields(settings.output.raw_fields)
    for key in settings.enrich.interface_names:
        parse_address_key(key, "enrich.interface_names", "exporter_ip:ifindex")
    for key in settings.enrich.endpoint_applications:
        parse_address_key(key, "enrich.endpoint_applications", "server_ip:port", 65_535)
    enrich = settings.enrich
    parse_networks(enrich.internal_networks, "enrich.internal_networks")
    parse_network_names(enrich.network_names, "enrich.network_names")
    parse_network_names(enrich.exporter_names, "enrich.exporter_names")
    parse_exporter_rates("enrich.sampling_rates", settings.enrich.sampling_rates)
    parse_exporter_rates("enrich.default_sampling_rates", settings.enrich.default_sampling_rates)
    resolve = settings.enrich.resolve_ip2host
    if resolve.lower() not in RESOLVE_IP2HOST_VALUES:
        raise ConfigError(f"enrich.resolve_ip2host: {resolve!r} is not one of {', '.join(RESOLVE_IP2HOST_VALUES)}")


def describe_settings(loaded: LoadedSettings) -> str:
    """check-config output: one `key = value  # source` line per key, secrets masked."""
    lines = []
    settings = loaded.settings
    for key in _all_keys():
        section, name = _split_key(key)
        value = getattr(_target(settings, section), name)
        rendered = '"********"' if key in SECRET_KEYS and value else orjson.dumps(value).decode()
        lines.append(f"{key} = {rendered}  # {loaded.sources[key]}")
    return "\n".join(lines)


def log_level(env: Mapping[str, str] | None = None) -> str:
    """FLOWD_LOG_LEVEL, a `logging` level name (INFO when unset); a ConfigError naming it otherwise."""
    level = (os.environ if env is None else env).get("FLOWD_LOG_LEVEL", "INFO").strip().upper()
    if not isinstance(logging.getLevelName(level), int):
        names = ", ".join(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
        raise ConfigError(f"env:FLOWD_LOG_LEVEL: {level!r} is not a log level ({names})")
    return level


def worker_count(settings: Settings) -> int:
    """`listen.workers`, or one per CPU flowd may use when it is 0."""
    return settings.listen.workers or available_cpus()

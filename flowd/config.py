"""Settings: one dataclass per TOML section. Loading (TOML file, FLOWD_<SECTION>_<KEY> variables,
ElastiFlow 4.x compatibility names) lives below the dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ListenSettings:
    netflow: list[str] = field(default_factory=lambda: ["0.0.0.0:2055"])
    """host:port (IPv6 as [addr]:port) for NetFlow v5/v9 (any version is accepted on any port)."""
    ipfix: list[str] = field(default_factory=lambda: ["0.0.0.0:4739"])
    sflow: list[str] = field(default_factory=lambda: ["0.0.0.0:6343"])
    ipfix_tcp: list[str] = field(default_factory=lambda: ["0.0.0.0:4739"])
    receive_buffer_bytes: int = 32 * 1024 * 1024
    queue_size: int = 4096
    """Batches held between receive and decode; ingress drops (and counts) beyond it."""
    batch_size: int = 256
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
    interface_names: dict[str, str] = field(default_factory=dict)
    """"exporter_ip:ifindex" -> name, configured by the operator."""


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


@dataclass(slots=True)
class MetricsSettings:
    address: str = "127.0.0.1:9107"
    status_interval_s: float = 10.0


@dataclass(slots=True)
class Settings:
    listen: ListenSettings = field(default_factory=ListenSettings)
    templates: TemplateSettings = field(default_factory=TemplateSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    enrich: EnrichSettings = field(default_factory=EnrichSettings)
    elasticsearch: ElasticsearchSettings = field(default_factory=ElasticsearchSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    shutdown_grace_s: float = 30.0

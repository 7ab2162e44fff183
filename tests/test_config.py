"""Configuration loading: precedence, ElastiFlow 4.x names, errors naming the key, check-config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowd import config
from flowd.cgroup import available_cpus, cgroup_cpu_quota
from flowd.cli import main
from flowd.config import ELASTIFLOW_SIMPLE, load_settings
from flowd.errors import ConfigError


@pytest.fixture(autouse=True)
def eight_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """ElastiFlow's worker counts are capped at the CPUs flowd may use: the same on every machine here."""
    monkeypatch.setattr(config, "available_cpus", lambda *_: 8)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flowd.toml"
    path.write_text(text)
    return path


def test_defaults_have_default_source() -> None:
    loaded = load_settings(None, {})
    assert loaded.settings.listen.netflow == ["0.0.0.0:2055"]
    assert loaded.settings.listen.receive_buffer_bytes == 32 * 1024 * 1024
    assert loaded.settings.metrics.address == "127.0.0.1:9107"
    assert set(loaded.sources.values()) == {"default"}


def test_precedence_default_toml_elastiflow_flowd(tmp_path: Path) -> None:
    path = write(tmp_path, "[listen]\nworkers = 2\nqueue_size = 1000\nbatch_size = 64\n")
    env = {"ELASTIFLOW_NETFLOW_UDP_WORKERS": "3", "ELASTIFLOW_SFLOW_UDP_QUEUE_SIZE": "2000"}
    loaded = load_settings(path, env)
    assert loaded.settings.listen.batch_size == 64
    assert loaded.sources["listen.batch_size"] == f"toml:{path}"
    assert loaded.settings.listen.workers == 3
    assert loaded.sources["listen.workers"] == "env:ELASTIFLOW_NETFLOW_UDP_WORKERS"
    assert loaded.settings.listen.queue_size == 2000
    loaded = load_settings(path, {**env, "FLOWD_LISTEN_WORKERS": "4"})
    assert loaded.settings.listen.workers == 4
    assert loaded.sources["listen.workers"] == "env:FLOWD_LISTEN_WORKERS"
    assert loaded.sources["listen.netflow"] == "default"


def test_flowd_env_top_level_and_lists() -> None:
    loaded = load_settings(
        None,
        {
            "FLOWD_SHUTDOWN_GRACE_S": "7.5",
            "FLOWD_LISTEN_NETFLOW": "0.0.0.0:2055, [::]:2055",
            "FLOWD_ENRICH_INTERFACE_NAMES": '{"192.0.2.1:3": "ge-0/0/3"}',
            "FLOWD_CORPUS": "/somewhere",  # another tool's variable: ignored
        },
    )
    assert loaded.settings.shutdown_grace_s == 7.5
    assert loaded.settings.listen.netflow == ["0.0.0.0:2055", "[::]:2055"]
    assert loaded.settings.enrich.interface_names == {"192.0.2.1:3": "ge-0/0/3"}


ELASTIFLOW_ENV = {
    "ELASTIFLOW_NETFLOW_IPV4_PORT": "9995",
    "ELASTIFLOW_NETFLOW_UDP_WORKERS": "2",
    "ELASTIFLOW_NETFLOW_UDP_QUEUE_SIZE": "8192",
    "ELASTIFLOW_NETFLOW_UDP_RCV_BUFF": "16777216",
    "ELASTIFLOW_SFLOW_IPV4_HOST": "127.0.0.1",
    "ELASTIFLOW_SFLOW_IPV4_PORT": "6344",
    "ELASTIFLOW_SFLOW_IPV6_PORT": "56343",
    "ELASTIFLOW_IPFIX_UDP_IPV4_PORT": "4740",
    "ELASTIFLOW_IPFIX_TCP_IPV4_PORT": "4741",
    "ELASTIFLOW_GEOIP_CACHE_SIZE": "16384",
    "ELASTIFLOW_GEOIP_LOOKUP": "false",
    "ELASTIFLOW_ASN_LOOKUP": "false",
    "ELASTIFLOW_OUI_LOOKUP": "true",
    "ELASTIFLOW_RESOLVE_IP2HOST": "exporters",
    "ELASTIFLOW_NAMESERVER": "127.0.0.53",
    "ELASTIFLOW_DNS_HIT_CACHE_SIZE": "100",
    "ELASTIFLOW_DNS_HIT_CACHE_TTL": "60",
    "ELASTIFLOW_DNS_FAILED_CACHE_SIZE": "200",
    "ELASTIFLOW_DNS_FAILED_CACHE_TTL": "120",
    "ELASTIFLOW_ES_HOST": "127.0.0.1:9200",
    "ELASTIFLOW_ES_USER": "elastic",
    "ELASTIFLOW_ES_PASSWD": "changeme",
    "ELASTIFLOW_ES_SSL_ENABLE": "true",
    "ELASTIFLOW_ES_SSL_VERIFY": "false",
}


def test_elastiflow_names() -> None:
    loaded = load_settings(None, ELASTIFLOW_ENV)
    s = loaded.settings
    assert s.listen.netflow == ["0.0.0.0:9995"]
    assert s.listen.sflow == ["127.0.0.1:6344", "[::]:56343"]
    assert s.listen.ipfix == ["0.0.0.0:4740"]
    assert s.listen.ipfix_tcp == ["0.0.0.0:4741"]
    assert (s.listen.workers, s.listen.queue_size, s.listen.receive_buffer_bytes) == (2, 8192, 16777216)
    e = s.enrich
    assert (e.geoip_cache_size, e.geoip_lookup, e.asn_lookup, e.oui_lookup) == (16384, False, False, True)
    assert (e.resolve_ip2host, e.nameservers) == ("exporters", ["127.0.0.53"])
    assert (e.dns_hit_cache_size, e.dns_hit_cache_ttl_s, e.dns_failed_cache_size, e.dns_failed_cache_ttl_s) == (
        100,
        60.0,
        200,
        120.0,
    )
    es = s.elasticsearch
    assert (es.hosts, es.user, es.password, es.tls, es.verify) == (
        ["127.0.0.1:9200"],
        "elastic",
        "changeme",
        True,
        False,
    )
    for suffix, key in ELASTIFLOW_SIMPLE.items():
        assert loaded.sources[key] == f"env:ELASTIFLOW_{suffix}"
    assert loaded.sources["listen.netflow"] == "env:ELASTIFLOW_NETFLOW_IPV4_PORT"


def test_elastiflow_numbered_es_hosts() -> None:
    env = {"ELASTIFLOW_ES_HOST_1": "a:9200", "ELASTIFLOW_ES_HOST_2": "b:9200", "ELASTIFLOW_ES_HOST_3": ""}
    assert load_settings(None, env).settings.elasticsearch.hosts == ["a:9200", "b:9200"]


@pytest.mark.parametrize(
    ("toml", "env", "key"),
    [
        ('[listen]\nnetflow = ["0.0.0.0:70000"]\n', {}, "listen.netflow"),
        ('[listen]\nsflow = ["nonsense"]\n', {}, "listen.sflow"),
        ("", {"ELASTIFLOW_NETFLOW_IPV4_PORT": "99999"}, "ELASTIFLOW_NETFLOW_IPV4_PORT"),
        ("", {"ELASTIFLOW_NETFLOW_IPV4_PORT": "abc"}, "ELASTIFLOW_NETFLOW_IPV4_PORT"),
        ("[listen]\nqueue_size = -5\n", {}, "listen.queue_size"),
        ("", {"FLOWD_TEMPLATES_TTL_S": "-1"}, "templates.ttl_s"),
        ("[listen]\nbogus = 1\n", {}, "listen.bogus"),
        ("[nosuchsection]\nx = 1\n", {}, "nosuchsection"),
        ("surprise = 1\n", {}, "surprise"),
        ("", {"FLOWD_ENRICH_GEOIP_LOOKUP": "maybe"}, "enrich.geoip_lookup"),
        ("", {"ELASTIFLOW_ES_SSL_ENABLE": "perhaps"}, "elasticsearch.tls"),
        ("", {"FLOWD_LISTEN_BOGUS": "1"}, "FLOWD_LISTEN_BOGUS"),
        ('[listen]\nworkers = "two"\n', {}, "listen.workers"),
        ('[listen]\nallowed_exporters = ["10.0.0.0/33"]\n', {}, "listen.allowed_exporters"),
        ("", {"ELASTIFLOW_RESOLVE_IP2HOST": "sometimes"}, "enrich.resolve_ip2host"),
        ('[metrics]\naddress = "127.0.0.1"\n', {}, "metrics.address"),
        # found by an audit: these passed check-config and then crashed every worker, forever
        ("[enrich]\ncommunity_id_seed = 70000\n", {}, "enrich.community_id_seed"),
        ("", {"ELASTIFLOW_DNS_FAILED_CACHE_TTL": "0"}, "enrich.dns_failed_cache_ttl_s"),
        ("[enrich]\ndns_hit_cache_ttl_s = 0.0\n", {}, "enrich.dns_hit_cache_ttl_s"),
        ("", {"ELASTIFLOW_NAMESERVER": "localhost"}, "enrich.nameservers"),
        ('[listen]\nnetflow = ["127.0.0.1:2055"]\nipfix = ["127.0.0.1:2055"]\n', {}, "listen.ipfix"),
        ('[listen]\nsflow = ["[::1]:6343", "[0:0::1]:6343"]\n', {}, "listen.sflow"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, toml: str, env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, toml), env)
    assert key in str(caught.value)


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml", {})
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(write(tmp_path, "[listen\n"), {})
    latin1 = tmp_path / "latin1.toml"  # found by an audit: it got past both reload handlers
    latin1.write_bytes('[enrich]\nnetwork_names = { "10.0.0.0/8" = "café" }\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(latin1, {})


def test_check_config_prints_values_and_sources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, '[output]\ndirectory = "/data/flows"\n')
    monkeypatch.setenv("ELASTIFLOW_ES_PASSWD", "secret")
    monkeypatch.setenv("FLOWD_LISTEN_BATCH_SIZE", "32")
    assert main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(" = ", 1) for line in out.splitlines())
    assert lines["output.directory"] == f'"/data/flows"  # toml:{path}'
    assert lines["listen.batch_size"] == "32  # env:FLOWD_LISTEN_BATCH_SIZE"
    assert lines["elasticsearch.password"] == '"********"  # env:ELASTIFLOW_ES_PASSWD'
    assert lines["listen.netflow"] == '["0.0.0.0:2055"]  # default'
    assert "secret" not in out


def test_cli_exits_2_on_bad_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[listen]\nreceive_buffer_bytes = -1\n")
    assert main(["check-config", "--config", str(path)]) == 2
    assert "listen.receive_buffer_bytes" in capsys.readouterr().err
    assert main(["run", "--config", str(path)]) == 2
    assert "listen.receive_buffer_bytes" in capsys.readouterr().err


def test_ipv6_keys_are_written_as_documents_write_addresses() -> None:
    """Found by an audit: `::ffff:10.1.1.5` was stored as `::ffff:a01:105`, which no document
    holds, so such endpoint and interface entries never matched."""
    from flowd.config_values import parse_address_key

    assert parse_address_key("[::ffff:10.1.1.5]:8443", "k", "f") == ("::ffff:10.1.1.5", 8443)
    assert parse_address_key("[2001:DB8::10]:8443", "k", "f") == ("2001:db8::10", 8443)
    assert parse_address_key("10.1.1.5:1", "k", "f") == ("10.1.1.5", 1)


def test_nameservers_are_ip_addresses() -> None:
    """Found by an audit: a host name passed, and every lookup then timed out silently."""
    from flowd.enrich.dns import parse_nameserver

    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("[::1]:53") == ("::1", 53)
    assert parse_nameserver("2001:db8::53") == ("2001:db8::53", 53)
    with pytest.raises(ConfigError, match="not an IP address"):
        parse_nameserver("localhost:53")


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ("ftp://es:9200", "'ftp://es:9200' is not http(s)://host[:port][/prefix]"),
        ("es:99999", "'es:99999': bad port"),
        ("es1:9200,es2:nine", "'es2:nine': bad port"),
    ],
)
def test_bad_elasticsearch_hosts_stop_loading(hosts: str, message: str) -> None:
    """Found by an audit: these passed check-config, then every worker died at start with a
    ValueError traceback and the supervisor restarted it every 10 s."""
    for env in ({"FLOWD_ELASTICSEARCH_HOSTS": hosts}, {"ELASTIFLOW_ES_HOST": hosts}):
        with pytest.raises(ConfigError) as caught:
            load_settings(None, env)
        assert str(caught.value).startswith(f"elasticsearch.hosts: {message}")


def test_credentials_in_a_host_url_are_refused_without_repeating_them() -> None:
    """Found by an audit: `https://elastic:changeme@es:9200` was accepted, its password printed by
    check-config and in the start-up log line naming the output, and never sent (only the host
    was taken from the URL)."""
    env = {"FLOWD_ELASTICSEARCH_HOSTS": "https://elastic:changeme@es:9200"}
    with pytest.raises(ConfigError, match=r"elasticsearch\.hosts: https://…@es:9200: credentials") as caught:
        load_settings(None, env)
    assert "changeme" not in str(caught.value)


@pytest.mark.parametrize("password", ["p/ss", "12/x", "p#ss", "p?ss"])
def test_credentials_whose_password_ends_the_host_are_refused_without_repeating_them(password: str) -> None:
    """Found in review: a password holding / ? or # ends the URL's host part early, so the @ was
    not seen: the error said "bad port" and repeated the URL with the password, and with a
    password of digits before the / the user name was taken as the host and the rest as a path."""
    for url in (f"https://elastic:{password}@es:9200", f"elastic:{password}@es:9200"):
        with pytest.raises(ConfigError, match=r"elasticsearch\.hosts: https?://…@es:9200: credentials") as caught:
            load_settings(None, {"FLOWD_ELASTICSEARCH_HOSTS": url})
        assert password not in str(caught.value)


def test_elastiflow_es_host_form_takes_its_scheme_from_ssl_enable() -> None:
    from flowd.config_values import parse_es_host

    loaded = load_settings(None, {"ELASTIFLOW_ES_HOST": "127.0.0.1:9200", "ELASTIFLOW_ES_SSL_ENABLE": "true"})
    es = loaded.settings.elasticsearch
    assert [parse_es_host(host, tls=es.tls) for host in es.hosts] == [("https", "127.0.0.1", 9200, "")]


@pytest.mark.parametrize(
    ("toml", "env", "key"),
    [
        ("", {"FLOWD_TEMPLATES_TTL_S": "nan"}, "templates.ttl_s"),
        ("", {"ELASTIFLOW_DNS_HIT_CACHE_TTL": "NaN"}, "enrich.dns_hit_cache_ttl_s"),
        ("shutdown_grace_s = inf\n", {}, "shutdown_grace_s"),
        ("[listen]\nbatch_delay_ms = nan\n", {}, "listen.batch_delay_ms"),
        ("", {"FLOWD_ELASTICSEARCH_RETRY_MAX_S": "-inf"}, "elasticsearch.retry_max_s"),
    ],
)
def test_non_finite_numbers_are_refused(tmp_path: Path, toml: str, env: dict[str, str], key: str) -> None:
    """Found by an audit: nan passed every range check (it is neither negative nor 0), so a nan
    TTL, delay or interval loaded and reached the timers; inf passed the non-negative ones."""
    with pytest.raises(ConfigError, match=f"^{key}: expected a finite number"):
        load_settings(write(tmp_path, toml), env)


def test_dns_cache_sizes_of_0_turn_the_caches_off() -> None:
    """Found by an audit: ElastiFlow passes DNS_HIT_CACHE_SIZE and DNS_FAILED_CACHE_SIZE to
    Logstash's dns filter, where 0 (its default) means no cache; flowd refused 0 at load, so such a
    manifest did not start. Negative sizes are still refused."""
    from flowd.enrich.dns import ReverseDnsResolver

    env = {
        "ELASTIFLOW_DNS_HIT_CACHE_SIZE": "0",
        "ELASTIFLOW_DNS_FAILED_CACHE_SIZE": "0",
        "ELASTIFLOW_NAMESERVER": "127.0.0.1",
    }
    enrich = load_settings(None, env).settings.enrich
    assert (enrich.dns_hit_cache_size, enrich.dns_failed_cache_size) == (0, 0)
    resolver = ReverseDnsResolver.from_settings(enrich)
    resolver.hit_cache.put("192.0.2.1", "host.example", 0.0)
    assert resolver.hit_cache.get("192.0.2.1", 0.0) is None
    with pytest.raises(ConfigError, match=r"^enrich\.dns_failed_cache_size: must not be negative"):
        load_settings(None, {"ELASTIFLOW_DNS_FAILED_CACHE_SIZE": "-1"})


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"FLOWD_ELASTICSEARCH_NAMESPACE": "Production"}, "elasticsearch.namespace"),
        ({"FLOWD_ELASTICSEARCH_NAMESPACE": "site a"}, "elasticsearch.namespace"),
        ({"FLOWD_ELASTICSEARCH_NAMESPACE": ""}, "elasticsearch.namespace"),
        ({"FLOWD_ELASTICSEARCH_DATA_STREAM": "flows/flowd"}, "elasticsearch.data_stream"),
        ({"FLOWD_ELASTICSEARCH_DATA_STREAM": "_flows"}, "elasticsearch.data_stream"),
        ({"FLOWD_ELASTICSEARCH_ROLLOVER_MAX_SIZE": "50 GB"}, "elasticsearch.rollover_max_size"),
        ({"FLOWD_ELASTICSEARCH_ROLLOVER_MAX_AGE": "1 day"}, "elasticsearch.rollover_max_age"),
    ],
)
def test_index_names_and_rollover_values_are_checked_at_load(env: dict[str, str], key: str) -> None:
    """Found by an audit: these loaded, then every `_bulk` item was refused (an index name
    Elasticsearch does not allow) or `flowd setup` failed on the lifecycle policy."""
    with pytest.raises(ConfigError, match=f"^{key}: "):
        load_settings(None, env)


def test_usual_index_names_and_rollover_values_load() -> None:
    env = {
        "FLOWD_ELASTICSEARCH_NAMESPACE": "production",
        "FLOWD_ELASTICSEARCH_ROLLOVER_MAX_SIZE": "1.5gb",
        "FLOWD_ELASTICSEARCH_ROLLOVER_MAX_AGE": "12h",
    }
    es = load_settings(None, env).settings.elasticsearch
    assert (es.data_stream, es.namespace, es.rollover_max_size, es.rollover_max_age) == (
        "flows-flowd",
        "production",
        "1.5gb",
        "12h",
    )


def test_the_cpus_flowd_may_use_follow_its_cgroup_quota(tmp_path: Path) -> None:
    """A pod's CPU limit is its cgroup's quota; `os.cpu_count` reports the node's cores."""
    v2, v1, none = tmp_path / "v2", tmp_path / "v1", tmp_path / "none"
    (v1 / "cpu").mkdir(parents=True)
    v2.mkdir()
    none.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert (cgroup_cpu_quota(v2), cgroup_cpu_quota(v1), cgroup_cpu_quota(none)) == (1.5, 1.0, None)
    import os

    affinity = len(os.sched_getaffinity(0))
    assert available_cpus(v2) == min(affinity, 2)
    assert available_cpus(v1) == 1
    assert available_cpus(none) == affinity
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(v2) is None


def test_elastiflow_udp_workers_are_capped_at_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """ElastiFlow's UDP_WORKERS are Logstash pipeline threads (4 by default in its manifests);
    flowd's workers are processes, so a 1-CPU pod would have run 4 of them."""
    monkeypatch.setattr(config, "available_cpus", lambda *_: 1)
    loaded = load_settings(None, {"ELASTIFLOW_NETFLOW_UDP_WORKERS": "4"})
    assert loaded.settings.listen.workers == 1
    assert "capped at the 1 CPUs" in loaded.sources["listen.workers"]
    explicit = load_settings(None, {"ELASTIFLOW_NETFLOW_UDP_WORKERS": "4", "FLOWD_LISTEN_WORKERS": "4"})
    assert explicit.settings.listen.workers == 4  # flowd's own setting is taken as it is


def test_an_unknown_log_level_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from flowd.server.app import run_server

    monkeypatch.setenv("FLOWD_LOG_LEVEL", "verbose")
    assert run_server(None) == 2
    assert "FLOWD_LOG_LEVEL" in capsys.readouterr().err
    assert main(["check-config"]) == 2  # the check an operator runs before a start says so too
    assert "FLOWD_LOG_LEVEL" in capsys.readouterr().err


@pytest.mark.parametrize(("size", "age"), [("50g", "1D"), ("512MB", "30d"), ("1T", "36H")])
def test_rollover_values_elasticsearch_takes_are_taken(size: str, age: str) -> None:
    """Elasticsearch's parsers take a byte unit without its b and any case: refusing `50g` or `1D`
    stopped a configuration the cluster would have run."""
    env = {"FLOWD_ELASTICSEARCH_ROLLOVER_MAX_SIZE": size, "FLOWD_ELASTICSEARCH_ROLLOVER_MAX_AGE": age}
    es = load_settings(None, env).settings.elasticsearch
    assert (es.rollover_max_size, es.rollover_max_age) == (size, age)


def test_a_cgroup_period_of_zero_is_no_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("100000 0\n")
    assert cgroup_cpu_quota(tmp_path) is None

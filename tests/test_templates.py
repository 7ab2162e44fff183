"""Template cache policy: caps, TTL, parking bounds and snapshot/restore, with time as an argument."""

from __future__ import annotations

import contextlib
import json
import struct

from flowd.decode import TemplateCache, decode_datagram
from flowd.decode.records import TemplateField, compile_template
from flowd.decode.template_snapshot import render_snapshot
from flowd.decode.templates import ParkedSet
from flowd.errors import DecodeError
from tests.test_data_set_batch import v9_datagram, v9_records, v9_set, v9_template
from tests.test_ipfix_features import V4_TEMPLATE, ipfix_message, ipfix_set, v4_record

EXPORTER = ("192.0.2.9", 4739)


def _template(template_id: int) -> bytes:
    return struct.pack("!HHHH", template_id, 1, 8, 4)


def test_per_exporter_cap_refuses_and_counts() -> None:
    cache = TemplateCache(max_per_exporter=10)
    flood = ipfix_message(ipfix_set(2, b"".join(_template(256 + i) for i in range(50))))
    result = decode_datagram(flood, EXPORTER, cache, 0.0)
    assert len(cache) == 10 and result.templates_added == 10
    assert cache.stats.rejected_over_cap == 40
    assert sum(e.reason == "template_cap" for e in result.errors) == 40
    other = decode_datagram(ipfix_message(ipfix_set(2, _template(256))), ("192.0.2.10", 4739), cache, 0.0)
    assert other.templates_added == 1  # one noisy exporter does not starve the others


def test_global_cap() -> None:
    cache = TemplateCache(max_templates=5)
    refused = 0
    for port in range(10):
        try:
            decode_datagram(ipfix_message(ipfix_set(2, _template(256))), ("192.0.2.1", 1000 + port), cache, 0.0)
        except DecodeError as error:  # a datagram whose only content was refused
            assert error.reason == "template_cap"
            refused += 1
    assert len(cache) == 5 and refused == 5


def _wide_template(template_id: int, seed: int, count: int = 512) -> bytes:
    """A template of `count` fields whose field list differs for each `seed`."""
    fields = [(1 + (seed + i) % 400, 4) for i in range(count - 1)] + [(2, 4 + seed % 4)]
    return struct.pack("!HH", template_id, count) + b"".join(struct.pack("!HH", *f) for f in fields)


def test_template_fields_are_bounded_per_exporter_and_in_distinct_layouts() -> None:
    """Found by an audit: templates were capped by count only (4,096 per exporter, 262,144 in
    all), but one may have 512 fields and a compiled field costs about 0.4 KB: one exporter
    could hold 0.9 GB, and one address rotating its source port far more; refused templates were
    compiled all the same. Now fields are bounded per exporter and, over distinct field lists, in
    all; refused templates are counted and never compiled."""
    from flowd.decode import records
    from flowd.decode.templates import MAX_FIELDS_PER_EXPORTER, MAX_LAYOUT_FIELDS

    cache = TemplateCache()
    per_exporter = MAX_FIELDS_PER_EXPORTER // 512
    sent = per_exporter + 8
    for number in range(sent):
        with contextlib.suppress(DecodeError):
            decode_datagram(ipfix_message(ipfix_set(2, _wide_template(256 + number, number))), EXPORTER, cache, 0.0)
    assert len(cache) == per_exporter and cache.stats.rejected_over_cap == sent - per_exporter
    # Another address, rotating its source port: distinct field lists are bounded in all.
    layouts = MAX_LAYOUT_FIELDS // 512
    compiled = records._compiled_fields
    for port in range(layouts):
        template = ipfix_set(2, _wide_template(256, 1000 + port))
        with contextlib.suppress(DecodeError):
            decode_datagram(ipfix_message(template), ("198.51.100.1", 1024 + port), cache, 0.0)
    assert len(cache) == layouts
    assert cache.stats.rejected_over_cap == sent - per_exporter + per_exporter
    assert records._compiled_fields - compiled <= layouts * 512 <= records.MAX_COMPILED_FIELDS
    # A field list already held costs nothing more: many exporters may share it.
    shared = ipfix_message(ipfix_set(2, _wide_template(256, 0)))
    for port in range(100):
        assert decode_datagram(shared, ("203.0.113.1", 1024 + port), cache, 0.0).templates_added == 1


def test_a_refused_redefinition_does_not_leave_the_old_template_decoding() -> None:
    cache = TemplateCache(max_fields_per_exporter=600)
    decode_datagram(ipfix_message(ipfix_set(2, _wide_template(256, 0, 100))), EXPORTER, cache, 0.0)
    decode_datagram(ipfix_message(ipfix_set(2, _wide_template(257, 1, 400))), EXPORTER, cache, 0.0)
    with contextlib.suppress(DecodeError):  # 256 redefined with 300 fields: 700 in all
        decode_datagram(ipfix_message(ipfix_set(2, _wide_template(256, 2, 300))), EXPORTER, cache, 0.0)
    assert cache.get((EXPORTER, 10, 1, 256), 0.0) is None and cache.get((EXPORTER, 10, 1, 257), 0.0) is not None
    assert cache.stats.rejected_over_cap == 1
    decode_datagram(ipfix_message(ipfix_set(2, _wide_template(256, 3, 200))), EXPORTER, cache, 0.0)
    assert len(cache) == 2


def test_ttl_expires_templates_by_receive_time() -> None:
    cache = TemplateCache(ttl_s=100.0)
    decode_datagram(ipfix_message(ipfix_set(2, V4_TEMPLATE)), EXPORTER, cache, 0.0)
    data = ipfix_message(ipfix_set(256, v4_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 3, 4)))
    assert len(decode_datagram(data, EXPORTER, cache, 99.0).flows) == 1
    assert decode_datagram(data, EXPORTER, cache, 201.0).flows == []
    assert cache.stats.expired == 1


def test_parking_is_bounded_per_key_and_globally() -> None:
    cache = TemplateCache(max_parked_per_key=3, max_parked_sets=5)
    key = (EXPORTER, 10, 0, 256)
    for number in range(10):
        cache.park(key, ParkedSet(bytes([number]), float(number), 0, number, None))
    assert cache.parked_sets == 3 and cache.stats.parked_dropped == 7
    for template_id in range(300, 310):
        cache.park((EXPORTER, 10, 0, template_id), ParkedSet(b"x", 0.0, 0, 0, None))
    assert cache.parked_sets <= 5


def test_parked_bytes_are_bounded_and_what_makes_room_is_counted() -> None:
    """Found by an audit: parking was bounded by count alone (16,384 sets), and one set may be
    nearly 64 KiB, so data sets for templates that never come could hold a gigabyte. Now the
    bodies are bounded in bytes too, and each set dropped to keep to it is counted."""
    from flowd.decode.templates import MAX_PARKED_BYTES

    cache = TemplateCache()
    body = bytes(60_000)
    datagrams = MAX_PARKED_BYTES // len(body) + 50
    for number in range(datagrams):  # every data set under its own template id: per-key caps never bite
        data = ipfix_message(ipfix_set(256 + number, body))
        assert decode_datagram(data, EXPORTER, cache, float(number)).parked == 1
    assert cache.parked_bytes <= MAX_PARKED_BYTES
    assert cache.parked_bytes == cache.parked_sets * len(body)
    assert cache.stats.parked_dropped == datagrams - cache.parked_sets >= 50
    cache.expire(float(datagrams) + cache.parked_ttl_s + 1)
    assert cache.parked_sets == 0 and cache.parked_bytes == 0


def test_parked_sets_expire() -> None:
    cache = TemplateCache(parked_ttl_s=10.0)
    cache.park((EXPORTER, 10, 0, 256), ParkedSet(b"x", 0.0, 0, 0, None))
    assert cache.expire(5.0) == 0
    assert cache.expire(20.0) == 1 and cache.parked_sets == 0 and cache.stats.parked_expired == 1


def test_parked_sets_are_handed_over_at_shutdown_and_counted_as_the_caller_says() -> None:
    cache = TemplateCache()
    for template_id in (256, 257):
        cache.park((EXPORTER, 10, 0, template_id), ParkedSet(b"x", 0.0, 0, 0, None))
    other = (("192.0.2.99", 4739), 10, 0, 256)
    cache.park(other, ParkedSet(b"y", 0.0, 0, 0, None))
    cache.restore_parked("unclaimed", [(other, [ParkedSet(b"old", 0.0, 0, 0, None)])])
    taken = cache.take_parked()
    # the restored set nobody claimed stays in its file: it is not this worker's to persist
    assert {key: [s.body for s in sets] for key, sets in taken.items()} == {
        (EXPORTER, 10, 0, 256): [b"x"],
        (EXPORTER, 10, 0, 257): [b"x"],
        other: [b"y"],
    }
    assert cache.parked_sets == 0
    cache.count_shutdown(2, 1)
    assert (cache.stats.parked_persisted, cache.stats.parked_at_shutdown) == (2, 1)
    assert "parked" not in json.dumps(cache.snapshot())


class Claims:
    """Stands in for the files: each claim can be won once, by whichever cache asks first."""

    def __init__(self, *claims: str) -> None:
        self.open = set(claims)
        self.asked: list[str] = []

    def __call__(self, claim: str) -> bool:
        self.asked.append(claim)
        if claim in self.open:
            self.open.remove(claim)
            return True
        return False


def test_a_restored_set_is_decoded_by_the_worker_that_claims_it_and_by_no_other() -> None:
    claims = Claims("file-a")
    first, second = TemplateCache(claim=claims), TemplateCache(claim=claims)
    data = v4_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 3, 4)
    key = (EXPORTER, 10, 1, 256)  # ipfix_message's domain
    for cache in (first, second):
        assert cache.restore_parked("file-a", [(key, [ParkedSet(data, 50.0, 7, 1, None)])]) == 1
        assert cache.parked_sets == 1 and claims.asked == []  # nothing is claimed before it is needed
    template = ipfix_message(ipfix_set(2, V4_TEMPLATE))
    (flow,) = decode_datagram(template, EXPORTER, second, 60.0).flows
    assert flow.fields["source_ipv4_address"] == "10.0.0.1" and flow.export_time == 7
    assert second.stats.parked_restored == second.stats.unparked == 1
    assert decode_datagram(template, EXPORTER, first, 61.0).flows == []  # the other copy is let go
    assert first.parked_sets == 0
    assert (first.stats.parked_restored, first.stats.unparked, first.stats.parked_expired) == (0, 0, 0)


def test_a_file_is_claimed_for_expiry_only_once_all_its_sets_are_past_their_time() -> None:
    """A set still in time may meet its template in the worker that gets the exporter: claiming
    the file to count its expired neighbour would take it from there."""
    claims = Claims("file-a")
    cache = TemplateCache(parked_ttl_s=10.0, claim=claims)
    old, fresh = (EXPORTER, 10, 1, 256), (EXPORTER, 10, 1, 257)
    cache.restore_parked(
        "file-a", [(old, [ParkedSet(b"o", 0.0, 0, 0, None)]), (fresh, [ParkedSet(b"f", 8.0, 0, 0, None)])]
    )
    assert cache.expire(12.0) == 0 and claims.asked == [] and cache.parked_sets == 2
    assert cache.expire(19.0) == 2 and claims.asked == ["file-a"] and cache.stats.parked_expired == 2


def test_restored_sets_expire_once_over_all_workers() -> None:
    claims = Claims("file-a")
    caches = [TemplateCache(parked_ttl_s=10.0, claim=claims) for _ in range(2)]
    key = (EXPORTER, 10, 0, 256)
    for cache in caches:
        cache.restore_parked("file-a", [(key, [ParkedSet(b"x", 0.0, 0, 0, None) for _ in range(2)])])
    assert [cache.expire(5.0) for cache in caches] == [0, 0] and claims.asked == []
    assert [cache.expire(20.0) for cache in caches] == [2, 0]
    assert [c.stats.parked_expired for c in caches] == [2, 0]
    assert [c.stats.parked_restored for c in caches] == [2, 0]
    assert [c.parked_sets for c in caches] == [0, 0]


def test_a_file_is_held_whole_or_not_at_all_and_its_copies_make_room_first() -> None:
    claims = Claims("file-a", "file-b", "file-c")
    cache = TemplateCache(max_parked_per_key=3, max_parked_sets=4, claim=claims)
    key = (EXPORTER, 10, 0, 256)
    too_big = [ParkedSet(bytes([n]), float(n), 0, n, None) for n in range(5)]
    assert cache.restore_parked("file-c", [(key, too_big)]) == 0  # stays in its file for a later start
    restored = [ParkedSet(bytes([n]), float(n), 0, n, None) for n in range(2)]
    assert cache.restore_parked("file-a", [(key, restored)]) == 2
    assert cache.restore_parked("file-b", [((EXPORTER, 10, 0, 300), [ParkedSet(b"b", 0.0, 0, 0, None)])]) == 1
    cache.park(key, ParkedSet(b"new", 100.0, 0, 0, None))
    assert cache.parked_sets == 4 and claims.asked == []
    # a new set under a full key: this worker gets the exporter, so it claims the file and drops
    # the oldest set, counted
    cache.park(key, ParkedSet(b"newer", 101.0, 0, 0, None))
    assert claims.asked == ["file-a"]
    assert cache.stats.parked_dropped == 1 and cache.stats.parked_restored == 2
    # over the global cap, copies nobody claimed go first, uncounted: their file stays
    cache.park((EXPORTER, 10, 0, 400), ParkedSet(b"other", 102.0, 0, 0, None))
    assert claims.asked == ["file-a"] and "file-b" in claims.open
    assert cache.stats.parked_dropped == 1 and cache.parked_sets == 4
    # then the oldest set this worker holds
    cache.park((EXPORTER, 10, 0, 401), ParkedSet(b"more", 103.0, 0, 0, None))
    assert cache.stats.parked_dropped == 2
    taken = cache.take_parked()
    assert [s.body for s in taken[key]] == [b"new", b"newer"]
    assert (EXPORTER, 10, 0, 300) not in taken


def test_claiming_a_file_through_one_template_takes_its_sets_under_every_template() -> None:
    """One file holds an exporter's sets: the worker that claims it gets that exporter's traffic."""
    claims = Claims("file-a")
    cache, other = TemplateCache(claim=claims), TemplateCache(claim=claims)
    keys = [(EXPORTER, 10, 1, 256), (EXPORTER, 10, 1, 257)]
    for worker in (cache, other):
        worker.restore_parked(
            "file-a",
            [(k, [ParkedSet(v4_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 3, 4), 5.0, 0, 0, None)]) for k in keys],
        )
    decode_datagram(ipfix_message(ipfix_set(2, V4_TEMPLATE)), EXPORTER, cache, 10.0)
    assert cache.stats.parked_restored == 2 and cache.stats.unparked == 1
    assert other.expire(10.0) == 0 and other.parked_sets == 2  # "file-a" still looks open to it
    assert cache.expire(1_000.0) == 1 and cache.stats.parked_expired == 1  # the other template never came
    assert other.expire(1_000.0) == 0 and other.parked_sets == 0 and other.stats.parked_restored == 0


def test_restored_sets_meet_a_template_known_at_start() -> None:
    """A snapshot brought the template back: the sets are released with the exporter's first
    traffic, not at the template's refresh."""
    claims = Claims("file-a")
    snapshot = TemplateCache()
    decode_datagram(ipfix_message(ipfix_set(2, V4_TEMPLATE)), EXPORTER, snapshot, 0.0)
    key = (EXPORTER, 10, 1, 256)
    workers = []
    for _ in range(2):
        worker = TemplateCache(claim=claims)
        worker.restore(json.loads(json.dumps(snapshot.snapshot())))
        worker.restore_parked(
            "file-a", [(key, [ParkedSet(v4_record("10.0.0.9", "10.0.0.2", 1, 2, 6, 3, 4), 5.0, 0, 0, None)])]
        )
        workers.append(worker)
    assert [w.releasable for w in workers] == [{key}, {key}]
    # only with the exporter's own traffic: the kernel sends it (and its templates) to that worker
    assert workers[0].take_releasable(6.0, {("192.0.2.200", 4739)}) == [] and workers[0].releasable == {key}
    (released,) = workers[0].take_releasable(6.0, {EXPORTER})
    assert released[0] == key and [s.body[:4] for s in released[2]] == [bytes([10, 0, 0, 9])]
    assert workers[1].take_releasable(6.0, {EXPORTER}) == [] and workers[1].parked_sets == 0
    assert workers[0].stats.unparked == 1 and workers[1].stats.unparked == 0


def test_snapshot_restore_round_trip_decodes_after_restart() -> None:
    cache = TemplateCache()
    opt = struct.pack("!HHH", 400, 2, 1) + struct.pack("!HHHH", 149, 4, 34, 4)
    decode_datagram(
        ipfix_message(ipfix_set(2, V4_TEMPLATE), ipfix_set(3, opt), ipfix_set(400, struct.pack("!II", 1, 100))),
        EXPORTER,
        cache,
        0.0,
    )
    snapshot = json.loads(json.dumps(cache.snapshot()))
    restarted = TemplateCache()
    assert restarted.restore(snapshot) == 2
    data = ipfix_message(ipfix_set(256, v4_record("10.0.0.1", "10.0.0.2", 1, 2, 6, 7, 1)))
    (record,) = decode_datagram(data, EXPORTER, restarted, 1.0).flows
    assert record.fields["source_ipv4_address"] == "10.0.0.1"
    assert record.sampling_rate == 100  # the sampling options state came back too


def test_refresh_keeps_compiled_template_and_redefinition_counts() -> None:
    cache = TemplateCache()
    key = (EXPORTER, 10, 0, 256)
    first = compile_template(256, (TemplateField(8, 4),))
    cache.put(key, first, 0.0)
    cache.put(key, compile_template(256, (TemplateField(8, 4),)), 1.0)
    assert cache.get(key, 1.0) is first
    cache.put(key, compile_template(256, (TemplateField(12, 4),)), 2.0)
    assert cache.stats.redefined == 1
    template = cache.get(key, 2.0)
    assert template is not None and template.names == ("destination_ipv4_address",)


def test_templates_with_one_field_list_share_their_compiled_parts() -> None:
    fields = (TemplateField(8, 4), TemplateField(12, 4), TemplateField(1, 8))
    first = compile_template(300, fields)
    second = compile_template(301, fields)
    other = compile_template(302, (TemplateField(8, 4), TemplateField(12, 4)))
    assert (first.template_id, second.template_id) == (300, 301)
    assert second.dtype is first.dtype and second.columns is first.columns
    assert other.dtype is not first.dtype
    record = struct.pack("!4s4sQ", bytes([192, 0, 2, 1]), bytes([198, 51, 100, 2]), 1500)
    for template in (first, second):
        assert template.decode_set(record, 0, len(record)) == [
            {"source_ipv4_address": "192.0.2.1", "destination_ipv4_address": "198.51.100.2", "octet_delta_count": 1500}
        ]


def test_templates_with_variable_length_fields_are_shared_too() -> None:
    """Found by the byte-flip property: a second variable-length template of one field list failed
    to compile (its shared form had no layout), losing the template."""
    fields = (TemplateField(8, 4), TemplateField(82, 0xFFFF))  # interfaceName, variable length
    first = compile_template(320, fields)
    second = compile_template(321, fields)
    assert (first.template_id, second.template_id) == (320, 321)
    record = bytes([192, 0, 2, 1]) + b"\x04eth0"
    for template in (first, second):
        assert template.decode_set(record, 0, len(record)) == [
            {"source_ipv4_address": "192.0.2.1", "interface_name": "eth0"}
        ]


def test_repeated_padding_stays_ignored() -> None:
    """Exporters pad records with paddingOctets (210) more than once; none of it is a field."""
    fields = (TemplateField(210, 2), TemplateField(8, 4), TemplateField(210, 1), TemplateField(1, 4))
    compiled = compile_template(310, fields)
    assert compiled.names == ("source_ipv4_address", "octet_delta_count")
    record = b"\x00\x00" + bytes([192, 0, 2, 1]) + b"\x00" + (99).to_bytes(4, "big")
    assert compiled.decode_set(record, 0, len(record)) == [
        {"source_ipv4_address": "192.0.2.1", "octet_delta_count": 99}
    ]


def test_snapshot_keeps_which_sampler_set_the_domain_rate() -> None:
    cache = TemplateCache()
    opt = struct.pack("!HHH", 401, 3, 1) + struct.pack("!HHHHHH", 302, 8, 305, 4, 306, 4)
    decode_datagram(
        ipfix_message(ipfix_set(3, opt), ipfix_set(401, struct.pack("!QII", 7, 1, 99))), EXPORTER, cache, 0.0
    )
    snapshot = json.loads(json.dumps(cache.snapshot()))
    restarted = TemplateCache()
    restarted.restore(snapshot)
    state = restarted.peek_domain((EXPORTER, 10, 1))
    assert state is not None and (state.sampling_rate, state.rate_sampler, state.samplers) == (100, 7, {7: 100})
    del snapshot["domains"][0]["rate_sampler"]  # a snapshot written before the field existed
    older = TemplateCache()
    older.restore(snapshot)
    state = older.peek_domain((EXPORTER, 10, 1))
    assert state is not None and state.rate_sampler is None and state.sampling_rate == 100


def test_parking_is_not_a_record_count_mismatch() -> None:
    """RFC 3954 counts a datagram's own templates and records: a parked set holds at least one
    record (how many, only its template tells), and records a template releases are not the
    datagram's own. Found when flowd counted every late template as a decode error."""
    cache = TemplateCache()
    exporter = ("192.0.2.7", 2055)
    parked = decode_datagram(v9_datagram(v9_set(256, v9_records(5, 1)), count=5), exporter, cache, 0.0)
    assert (parked.parked, parked.errors) == (1, [])
    too_many_sets = decode_datagram(
        v9_datagram(v9_set(256, v9_records(1, 2)), v9_set(258, v9_records(1, 3)), count=1), exporter, cache, 0.0
    )
    assert [e.reason for e in too_many_sets.errors] == ["record_count_mismatch"]
    released = decode_datagram(v9_datagram(v9_set(0, v9_template(256)), count=1), exporter, cache, 1.0)
    assert (len(released.flows), released.unparked_records, released.errors) == (6, 6, [])
    wrong = decode_datagram(v9_datagram(v9_set(256, v9_records(2, 4)), count=3), exporter, cache, 2.0)
    assert [e.reason for e in wrong.errors] == ["record_count_mismatch"]
    full = TemplateCache(max_parked_sets=0)
    refused = decode_datagram(
        v9_datagram(v9_set(0, v9_template(300)), v9_set(256, v9_records(2, 5)), count=3), exporter, full, 0.0
    )
    assert [e.reason for e in refused.errors] == ["parked_overflow"]  # not a mismatch as well


def test_restoring_every_workers_snapshot_keeps_the_newest_definition_and_counts_no_traffic() -> None:
    """Found by an audit: every worker loads every worker's snapshot, and the last file loaded
    won whatever its age (an exporter that moved between workers got its old layout back), while
    `added` went negative and restores were counted once per file."""
    older, newer = TemplateCache(), TemplateCache()
    decode_datagram(ipfix_message(ipfix_set(2, _template(256))), EXPORTER, older, 100.0)  # one field
    decode_datagram(ipfix_message(ipfix_set(2, V4_TEMPLATE)), EXPORTER, newer, 200.0)  # seven fields
    decode_datagram(ipfix_message(ipfix_set(2, _template(300))), EXPORTER, older, 100.0)
    snapshots = [json.loads(json.dumps(c.snapshot())) for c in (newer, older)]
    restarted = TemplateCache()
    assert [restarted.restore(s) for s in snapshots] == [1, 1]  # 256 from the newer file, then 300
    template = restarted.get((EXPORTER, 10, 1, 256), 201.0)
    assert template is not None and len(template.fields) == 7
    assert (restarted.stats.added, restarted.stats.redefined) == (0, 0)
    assert restarted.restore(snapshots[0]) == 0


def test_an_ended_sessions_templates_domains_and_parked_sets_go() -> None:
    """Found by an audit: IPFIX-over-TCP sessions' templates stayed for a day (and across restarts),
    so short sessions filled the cache and every other exporter's templates were refused."""
    from flowd.server.tcp import IpfixTcpServer

    session, other = ("192.0.2.50", 50123), ("192.0.2.51", 50124)
    cache = TemplateCache()
    for exporter in (session, other):
        decode_datagram(ipfix_message(ipfix_set(2, V4_TEMPLATE)), exporter, cache, 0.0)
        cache.domain((exporter, 10, 1)).sampling_rate = 100
    decode_datagram(ipfix_message(ipfix_set(400, b"\0" * 8)), session, cache, 0.0)
    server = IpfixTcpServer("ipfix_tcp", None, None, None)  # type: ignore[arg-type]
    server.ended(session)
    assert server.take_ended(before=0.0) == set()  # its messages may still be queued
    assert cache.forget_exporters(server.take_ended(before=float("inf"))) == 1
    assert cache.get((session, 10, 1, 256), 1.0) is None and cache.get((other, 10, 1, 256), 1.0) is not None
    assert cache.peek_domain((session, 10, 1)) is None and cache.peek_domain((other, 10, 1)) is not None
    assert cache.parked_sets == 0 and cache.stats.parked_expired == 1 and cache.stats.withdrawn == 1


def test_forgetting_an_exporter_leaves_another_runs_file_alone() -> None:
    """Found in review: after its copies were forgotten, the expiry pass claimed (deleted) the
    file with nothing left to count, losing what it held for the worker that needs it."""
    claims = Claims("file-a")
    cache = TemplateCache(parked_ttl_s=10.0, claim=claims)
    cache.restore_parked("file-a", [((EXPORTER, 10, 1, 256), [ParkedSet(b"x", 0.0, 0, 0, None)])])
    cache.forget_exporters({EXPORTER})
    assert cache.parked_sets == 0
    cache.expire(1_000.0)
    assert claims.asked == [] and "file-a" in claims.open


def test_forgetting_an_exporter_whose_file_holds_sets_under_several_keys() -> None:
    """One restored file holds an exporter's sets under several templates: forgetting the file at
    the first key took the others away, and the loop then read them (KeyError)."""
    cache = TemplateCache()
    cache.restore_parked(
        "file-a",
        [
            ((EXPORTER, 10, 1, 256), [ParkedSet(b"x", 0.0, 0, 0, None)]),
            ((EXPORTER, 10, 1, 257), [ParkedSet(b"y", 0.0, 0, 0, None)]),
        ],
    )
    cache.park((EXPORTER, 10, 1, 256), ParkedSet(b"own", 0.0, 0, 0, None))
    cache.forget_exporters({EXPORTER})
    assert cache.parked_sets == 0 and cache.parked_bytes == 0 and cache.stats.parked_expired == 1


def test_a_capture_renders_the_state_it_was_taken_at_whatever_changes_after() -> None:
    """The periodic save copies the cache in the event loop and renders the copy in a thread, while
    the loop goes on decoding: later templates and options data must not leak into that file."""
    cache = TemplateCache()
    opt = struct.pack("!HHH", 401, 3, 1) + struct.pack("!HHHHHH", 302, 8, 305, 4, 306, 4)
    sampler = ipfix_message(ipfix_set(3, opt), ipfix_set(401, struct.pack("!QII", 7, 1, 99)))
    decode_datagram(sampler, EXPORTER, cache, 0.0)
    decode_datagram(ipfix_message(ipfix_set(2, V4_TEMPLATE)), EXPORTER, cache, 0.0)
    expected = json.loads(json.dumps(cache.snapshot()))
    captured = cache.capture()
    resampled = ipfix_message(ipfix_set(401, struct.pack("!QII", 7, 1, 9) + struct.pack("!QII", 8, 1, 3)))
    decode_datagram(resampled, EXPORTER, cache, 5.0)
    decode_datagram(ipfix_message(ipfix_set(2, _template(300))), EXPORTER, cache, 5.0)
    assert json.loads(json.dumps(render_snapshot(captured))) == expected
    assert json.loads(json.dumps(cache.snapshot())) != expected  # the changes did reach the cache


def test_sampler_rates_are_bounded_over_every_domain_and_counted() -> None:
    """Found by an audit: each domain held up to 4,096 sampler and 4,096 interface rates, and one
    exporter may name thousands of domains (gigabytes from one address); at the domain cap the
    whole table was cleared without a count."""
    cache = TemplateCache(max_sampling_entries=100, max_templates=12)
    opt = struct.pack("!HHH", 401, 3, 1) + struct.pack("!HHHHHH", 302, 8, 305, 4, 306, 4)

    def samplers(domain: int, first: int, count: int, interval: int = 1) -> None:
        rows = b"".join(struct.pack("!QII", first + n, interval, 99) for n in range(count))
        message = ipfix_message(ipfix_set(3, opt), ipfix_set(401, rows), domain=domain)
        decode_datagram(message, EXPORTER, cache, 0.0)

    for domain in range(1, 11):
        samplers(domain, 0, 20)
    held = [cache.peek_domain((EXPORTER, 10, domain)) for domain in range(1, 11)]
    assert sum(len(state.samplers) for state in held if state is not None) == 100
    assert cache.stats.sampling_over_cap == 100
    samplers(1, 0, 1, interval=4)  # a known sampler's new rate is taken at the cap
    state = cache.peek_domain((EXPORTER, 10, 1))
    assert state is not None and state.samplers[0] == (4 + 99) // 4
    cache.forget_exporters({EXPORTER})  # its rates give their room back
    samplers(1, 0, 20)
    state = cache.peek_domain((EXPORTER, 10, 1))
    assert state is not None and len(state.samplers) == 20
    for domain in range(2, 14):  # past the domain cap (domains outlive expired templates): the oldest goes
        cache.domain((EXPORTER, 10, domain))
    assert cache.peek_domain((EXPORTER, 10, 1)) is None and cache.stats.domains_evicted == 1
    samplers(2, 100, 100)  # domain 1's 20 rates gave their room back as it went
    state = cache.peek_domain((EXPORTER, 10, 2))
    assert state is not None and len(state.samplers) == 100


def test_restoring_every_workers_snapshot_keeps_the_sampling_cap() -> None:
    """Found in review: every worker loads every worker's snapshot, and `restore` took all their
    sampler and interface rates, so after a restart each worker held the sum of the workers' caps."""
    snapshots = []
    for worker in range(4):
        cache = TemplateCache(max_sampling_entries=10)
        for domain in range(5):
            state = cache.domain(((f"192.0.2.{worker}", 2055), 9, domain))
            for sampler in range(3):
                if cache.take_sampling_entry():
                    state.samplers[sampler] = 100
                    state.interface_rates[sampler + 1] = 10
        snapshots.append(cache.snapshot())
    restored = TemplateCache(max_sampling_entries=10)
    for snapshot in snapshots:
        restored.restore(snapshot)
    held = sum(len(state.samplers) + len(state.interface_rates) for _, state in restored.capture().domains)
    assert held == restored._sampling_entries == 10
    assert not restored.take_sampling_entry()

"""Tests for the information-element registry (flowd.decode.fields)."""

from __future__ import annotations

from importlib import resources

import pytest

from flowd.decode import fields as ie
from flowd.decode.fields import FieldSpec, field_spec, snake_case, v9_field_spec

SNAKE_CASES = [
    ("octetDeltaCount", "octet_delta_count"),
    ("sourceIPv4Address", "source_ipv4_address"),
    ("destinationIPv6Prefix", "destination_ipv6_prefix"),
    ("flowStartSysUpTime", "flow_start_sys_up_time"),
    ("ipClassOfService", "ip_class_of_service"),
    ("bgpSourceAsNumber", "bgp_source_as_number"),
    ("mplsTopLabelIPv4Address", "mpls_top_label_ipv4_address"),
    ("postNATSourceIPv4Address", "post_nat_source_ipv4_address"),
    ("icmpTypeCodeIPv6", "icmp_type_code_ipv6"),
    ("dataLinkFrameSection", "data_link_frame_section"),
    ("sourceMacAddress", "source_mac_address"),
    ("VRFname", "vrf_name"),
    ("layer2SegmentId", "layer2_segment_id"),
]


@pytest.mark.parametrize(("camel", "snake"), SNAKE_CASES)
def test_snake_case(camel: str, snake: str) -> None:
    assert snake_case(camel) == snake


@pytest.mark.parametrize(
    ("camel", "snake"),
    [
        ("ingressVRFID", "ingress_vrf_id"),
        ("dot1qVlanId", "dot1q_vlan_id"),
        ("p2pTechnology", "p2p_technology"),
        ("postMCastPacketDeltaCount", "post_mcast_packet_delta_count"),
        ("messageMD5Checksum", "message_md5_checksum"),
        ("rfc3550JitterMilliseconds", "rfc3550_jitter_milliseconds"),
        ("ipv4IHL", "ipv4_ihl"),
    ],
)
def test_snake_case_more(camel: str, snake: str) -> None:
    assert snake_case(camel) == snake


def test_registry_is_complete() -> None:
    assert len(ie._IANA) > 450
    assert max(ie._IANA) >= 529
    # every id 1..529 is present except the unnamed NetFlow-v9-compatibility / deprecated slots
    missing = {i for i in range(1, 530) if i not in ie._IANA}
    assert missing == {65, 66, 67, 68, 69, 97, *range(105, 128), 416, 419}
    names = [spec.name for spec in ie._IANA.values()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("element_id", "name", "kind"),
    [
        # checked against the IANA registry (ipfix-information-elements)
        (1, "octet_delta_count", ie.UNSIGNED),
        (8, "source_ipv4_address", ie.IPV4),
        (27, "source_ipv6_address", ie.IPV6),
        (34, "sampling_interval", ie.UNSIGNED),
        (48, "sampler_id", ie.UNSIGNED),
        (56, "source_mac_address", ie.MAC),
        (150, "flow_start_seconds", ie.DATETIME_S),
        (152, "flow_start_milliseconds", ie.DATETIME_MS),
        (154, "flow_start_microseconds", ie.DATETIME_US),
        (156, "flow_start_nanoseconds", ie.DATETIME_NS),
        (225, "post_nat_source_ipv4_address", ie.IPV4),
        (236, "vrf_name", ie.STRING),
        (276, "data_records_reliability", ie.BOOLEAN),
        (292, "sub_template_list", ie.OCTETS),
        (311, "sampling_probability", ie.FLOAT),
        (315, "data_link_frame_section", ie.OCTETS),
        (351, "layer2_segment_id", ie.UNSIGNED),
        (434, "mib_object_value_integer", ie.SIGNED),
        (460, "http_request_host", ie.STRING),
        (483, "bgp_community", ie.UNSIGNED),
        (495, "srh_active_segment_ipv6", ie.IPV6),
        (497, "srh_segment_ipv6_list_section", ie.OCTETS),
        (505, "gtpu_flags", ie.UNSIGNED),
        (529, "udp_unsafe_ex_id_list", ie.OCTETS),
    ],
)
def test_iana_samples(element_id: int, name: str, kind: str) -> None:
    assert field_spec(0, element_id) == FieldSpec(name, kind)


def test_reverse_pen() -> None:
    assert field_spec(ie.REVERSE_PEN, 1) == FieldSpec("reverse_octet_delta_count", ie.UNSIGNED)
    assert field_spec(29305, 8) == FieldSpec("reverse_source_ipv4_address", ie.IPV4)
    assert field_spec(29305, 65) == FieldSpec("pen_29305_ie_65", ie.OCTETS)


def test_unknown_elements() -> None:
    assert field_spec(0, 32000) == FieldSpec("pen_0_ie_32000", ie.OCTETS)
    assert field_spec(0, 97) == FieldSpec("pen_0_ie_97", ie.OCTETS)
    assert field_spec(4242, 7) == FieldSpec("pen_4242_ie_7", ie.OCTETS)
    assert field_spec(9, 1) == FieldSpec("pen_9_ie_1", ie.OCTETS)


@pytest.mark.parametrize(
    ("pen", "element_id", "name", "kind"),
    [
        (9, 12235, "cisco_application_http_host", ie.STRING),  # Cisco AVC
        (35632, 118, "nprobe_l7_proto", ie.UNSIGNED),  # ntop nProbe
        (2636, 137, "juniper_common_properties_id", ie.UNSIGNED),  # Juniper
        (25461, 56701 & 0x7FFF, "panos_app_id", ie.STRING),  # Palo Alto
        (10704, 4, "barracuda_fw_rule", ie.STRING),  # Barracuda (corpus)
        (10704, 8, "barracuda_bind_ipv4_address", ie.IPV4),
        (15397, 1, "procera_service", ie.STRING),  # Procera (corpus)
        (637, 93, "nokia_nat_sub_string", ie.STRING),  # Nokia (corpus)
        (6871, 14, "initial_tcp_flags", ie.UNSIGNED),  # CERT YAF (corpus)
        (6871, 16398, "reverse_initial_tcp_flags", ie.UNSIGNED),
        (6871, 16422, "reverse_first_packet_banner", ie.OCTETS),
        (6871, 0x4000 | 502, "reverse_data_byte_count", ie.UNSIGNED),
        (6876, 881, "vmware_tenant_source_ipv4", ie.IPV4),  # VMware NSX
        (5951, 142, "netscaler_http_req_host", ie.STRING),  # Citrix NetScaler
    ],
)
def test_vendor_elements(pen: int, element_id: int, name: str, kind: str) -> None:
    assert field_spec(pen, element_id) == FieldSpec(name, kind)


@pytest.mark.parametrize("pen", [9, 35632, 2636, 25461, 10704, 15397, 637, 6871, 6876, 5951])
def test_each_vendor_has_entries(pen: int) -> None:
    assert any(key[0] == pen for key in ie._VENDOR)


def test_vendor_names_do_not_shadow_iana() -> None:
    iana_names = {spec.name for spec in ie._IANA.values()}
    assert not [s.name for s in ie._VENDOR.values() if s.name in iana_names]
    assert not [s.name for s in ie._V9_VENDOR.values() if s.name in iana_names]


def test_v9_field_spec() -> None:
    assert v9_field_spec(57590) == FieldSpec("nprobe_l7_proto", ie.UNSIGNED)
    assert v9_field_spec(57591) == FieldSpec("nprobe_l7_proto_name", ie.STRING)
    assert v9_field_spec(8) == FieldSpec("source_ipv4_address", ie.IPV4)
    assert v9_field_spec(8) == field_spec(0, 8)
    # Cisco ASA NSEL
    assert v9_field_spec(233) == FieldSpec("firewall_event", ie.UNSIGNED)
    assert v9_field_spec(33002) == FieldSpec("fw_ext_event", ie.UNSIGNED)
    assert v9_field_spec(40000) == FieldSpec("username", ie.STRING)
    assert v9_field_spec(40001) == FieldSpec("xlate_src_addr_ipv4", ie.IPV4)
    # Palo Alto PAN-OS
    assert v9_field_spec(56701) == FieldSpec("panos_app_id", ie.STRING)
    assert v9_field_spec(56702) == FieldSpec("panos_user_id", ie.STRING)
    # Streamcore squats unassigned ids below 32768
    assert v9_field_spec(8257) == FieldSpec("streamcore_url", ie.STRING)
    # unknown
    assert v9_field_spec(65000) == FieldSpec("pen_0_ie_65000", ie.OCTETS)
    assert v9_field_spec(20000) == FieldSpec("pen_0_ie_20000", ie.OCTETS)


def test_data_files_are_package_resources() -> None:
    package = resources.files("flowd.decode")
    assert package.joinpath("iana_ies.tsv").is_file()
    assert package.joinpath("vendor_ies.tsv").is_file()


def test_abstract_type_fallback() -> None:
    assert ie.abstract_type("unsigned256") == ie.UNSIGNED
    assert ie.abstract_type("no-such-type") == ie.OCTETS

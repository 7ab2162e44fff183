"""`flowd bench`: the pps harness (design.md section 6)."""

PROTOCOLS = ("v5", "v9", "ipfix", "sflow")
IPV6_SHARE = 0.1
"""The share of IPv6 in the traffic: every tenth data datagram of a v9/IPFIX exporter carries
IPv6 flows, and each sFlow sample is IPv6 with this probability."""

IPV4_RECORD_FIELDS = (
    (8, 4),  # sourceIPv4Address
    (12, 4),  # destinationIPv4Address
    (15, 4),  # ipNextHopIPv4Address
    (7, 2),  # sourceTransportPort
    (11, 2),  # destinationTransportPort
    (4, 1),  # protocolIdentifier
    (6, 1),  # tcpControlBits
    (5, 1),  # ipClassOfService
    (10, 4),  # ingressInterface
    (14, 4),  # egressInterface
    (1, 8),  # octetDeltaCount
    (2, 8),  # packetDeltaCount
    (16, 4),  # bgpSourceAsNumber
    (17, 4),  # bgpDestinationAsNumber
    (9, 1),  # sourceIPv4PrefixLength
    (13, 1),  # destinationIPv4PrefixLength
)
"""The fixed-length IPv4 record routers send in their default templates: (element id, length)."""

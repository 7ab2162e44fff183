"""`flowd bench`: the pps harness (design.md section 6)."""

PROTOCOLS = ("v5", "v9", "ipfix", "sflow")

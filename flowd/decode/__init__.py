"""Pure decoders: bytes in, records out. No sockets, no asyncio, no clock reads.

`decode_datagram` is the one entry point; it dispatches on the version word. NetFlow v5/v9 and
IPFIX carry a 16-bit version (5, 9, 10); sFlow carries a 32-bit version 5, so its first two
bytes are zero.
"""

from __future__ import annotations

from flowd.decode.ipfix import decode_ipfix
from flowd.decode.netflow_v5 import decode_netflow_v5
from flowd.decode.netflow_v9 import decode_netflow_v9
from flowd.decode.sflow import decode_sflow
from flowd.decode.templates import TemplateCache
from flowd.errors import TruncatedError, UnsupportedVersionError
from flowd.model import DecodeResult, Exporter

__all__ = ["TemplateCache", "decode_datagram"]


def decode_datagram(
    data: bytes | memoryview, exporter: Exporter, templates: TemplateCache, received_at: float
) -> DecodeResult:
    """Decode one export datagram (or one IPFIX message) from `exporter`.

    Raises `DecodeError` when nothing of the datagram could be decoded; problems confined to
    one set or record are reported in `DecodeResult.errors` and the rest still decodes.
    """
    if len(data) < 4:
        raise TruncatedError(f"datagram of {len(data)} bytes has no version word", offset=0)
    version = (data[0] << 8) | data[1]
    if version == 5:
        return decode_netflow_v5(data, exporter, templates, received_at)
    if version == 9:
        return decode_netflow_v9(data, exporter, templates, received_at)
    if version == 10:
        return decode_ipfix(data, exporter, templates, received_at)
    if version == 0 and data[2] == 0 and data[3] == 5:
        return decode_sflow(data, exporter, received_at)
    raise UnsupportedVersionError(f"unknown export version {version}", offset=0)

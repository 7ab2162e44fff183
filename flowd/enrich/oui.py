"""MAC address vendor names from the IEEE Registration Authority's public listings.

Reads the text listings as the IEEE publishes them and Debian's `ieee-data` package installs them
(/usr/share/ieee-data): `oui.txt` (MA-L, 24-bit prefixes), `mam.txt` (MA-M, 28-bit), `oui36.txt`
(MA-S, 36-bit) and `iab.txt` (the older 36-bit IAB blocks). Each entry is a pair of lines::

    00-22-72   (hex)\t\tAmerican Micro-Fuel Device Corp.
    002272     (base 16)\t\tAmerican Micro-Fuel Device Corp.

and for the smaller blocks the base-16 line carries the range inside the 24-bit OUI::

    70-B3-D5   (hex)\t\tTELEPLATFORMS
    F2F000-F2FFFF     (base 16)\t\tTELEPLATFORMS

The block size gives the prefix length. The IEEE lists the parent OUI of MA-M/MA-S blocks as
"IEEE Registration Authority", so the longest matching prefix wins.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

log = logging.getLogger(__name__)

REGISTRY_FILES = ("oui.txt", "mam.txt", "oui36.txt", "iab.txt")
SEARCH_DIRECTORIES = ("/usr/share/ieee-data", "/usr/share/misc", "/usr/local/share/ieee-data")
MAX_VENDOR_CHARS = 128

_HEX_LINE = re.compile(r"^\s*([0-9A-Fa-f]{2})-([0-9A-Fa-f]{2})-([0-9A-Fa-f]{2})\s+\(hex\)\s*(.*?)\s*$")
_BASE16_LINE = re.compile(r"^\s*([0-9A-Fa-f]{6})(?:-([0-9A-Fa-f]{6}))?\s+\(base 16\)\s*(.*?)\s*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _clean_vendor(name: str) -> str:
    return _CONTROL.sub("", name).strip()[:MAX_VENDOR_CHARS]


class OuiRegistry:
    """Longest-prefix lookup of a 48-bit MAC in the 24-, 28- and 36-bit registries."""

    def __init__(self) -> None:
        self._by_length: dict[int, dict[int, str]] = {36: {}, 28: {}, 24: {}}
        self.entries = 0
        self.lookups = 0
        self.not_found = 0
        self.invalid = 0

    def load_text(self, lines: Iterable[str]) -> int:
        """Add the entries of one IEEE listing; returns how many were added."""
        added = 0
        oui: int | None = None
        for line in lines:
            match = _HEX_LINE.match(line)
            if match:
                oui = int(match.group(1) + match.group(2) + match.group(3), 16)
                continue
            match = _BASE16_LINE.match(line)
            if not match:
                continue
            start_text, end_text, vendor = match.groups()
            vendor = _clean_vendor(vendor)
            if end_text is None:
                # MA-L: the base-16 line is the OUI itself.
                prefix, bits = int(start_text, 16), 24
            else:
                if oui is None:
                    continue
                start, end = int(start_text, 16), int(end_text, 16)
                size = end - start + 1
                if size <= 0 or size & (size - 1):
                    continue  # not a power-of-two block: malformed line
                bits = 48 - size.bit_length() + 1
                if bits not in self._by_length:
                    continue
                prefix = ((oui << 24) | start) >> (48 - bits)
            oui = None
            if vendor:
                self._by_length[bits][prefix] = vendor
                added += 1
        self.entries += added
        return added

    def load_file(self, path: str) -> int:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return self.load_text(handle)

    def lookup_number(self, mac: int) -> str | None:
        """`lookup` of a MAC given as its 48-bit number."""
        self.lookups += 1
        vendor = self.lookup_int(mac) if 0 <= mac < 1 << 48 else None
        if vendor is None:
            self.not_found += 1
        return vendor

    def lookup_int(self, mac: int) -> str | None:
        for bits, table in self._by_length.items():
            vendor = table.get(mac >> (48 - bits))
            if vendor is not None:
                return vendor
        return None

    def lookup(self, mac: str) -> str | None:
        """Vendor of a MAC written with `-`, `:` or `.` separators or none; None if unknown or malformed."""
        self.lookups += 1
        digits = mac.replace("-", "").replace(":", "").replace(".", "")
        if len(digits) != 12:
            self.invalid += 1
            return None
        try:
            value = int(digits, 16)
        except ValueError:
            self.invalid += 1
            return None
        vendor = self.lookup_int(value)
        if vendor is None:
            self.not_found += 1
        return vendor

    def stats(self) -> dict[str, int]:
        return {
            "oui_entries": self.entries,
            "oui_lookups": self.lookups,
            "oui_not_found": self.not_found,
            "oui_invalid": self.invalid,
        }


def registry_files(path: str) -> list[str]:
    """The listing files to load: `path` itself if a file, the known names in it if a directory,
    else the first of the usual directories that has any."""
    if path:
        if os.path.isdir(path):
            return [os.path.join(path, name) for name in REGISTRY_FILES if os.path.isfile(os.path.join(path, name))]
        return [path] if os.path.isfile(path) else []
    for directory in SEARCH_DIRECTORIES:
        found = [os.path.join(directory, n) for n in REGISTRY_FILES if os.path.isfile(os.path.join(directory, n))]
        if found:
            return found
    return []


def load_registry(path: str = "") -> OuiRegistry:
    registry = OuiRegistry()
    files = registry_files(path)
    if not files:
        log.warning("no IEEE OUI registry found (%s); MAC vendors stay empty", path or "install ieee-data")
    for file in files:
        try:
            registry.load_file(file)
        except OSError as error:
            log.warning("OUI registry %s not loaded: %s", file, error)
    return registry

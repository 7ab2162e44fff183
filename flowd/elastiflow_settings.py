"""ElastiFlow 4.x's user settings files, read so a deployment can move over with them.

`ELASTIFLOW_USER_SETTINGS_PATH` names a directory of Logstash translate dictionaries. Three of them
hold what flowd has settings for:
- `ifName.yml`: `"<exporter>::ifName.<ifIndex>": "<name>"`, which becomes `enrich.interface_names`.
- `sampling_interval.yml`: `"<exporter>": <rate>`, the rate of exporters whose flows carry none,
  which becomes `enrich.default_sampling_rates`.
- `applications.yml`: `"<server address>:<port>": "<application>"`, which becomes
  `enrich.endpoint_applications`.

The files are flat YAML, one `key: value` per line. That subset is read here, so flowd does not
depend on a YAML library. A line outside it stops start-up with the file and line named.
"""

from __future__ import annotations

import re
from pathlib import Path

from flowd.errors import ConfigError

INTERFACE_NAMES_FILE = "ifName.yml"
SAMPLING_RATES_FILE = "sampling_interval.yml"
APPLICATIONS_FILE = "applications.yml"
_IF_NAME_KEY = re.compile(r"^(?P<exporter>.+)::ifName\.(?P<index>\d+)$")
_LINE = re.compile(
    r"""^(?:"(?P<dq_key>(?:[^"\\]|\\.)*)"|'(?P<sq_key>(?:[^']|'')*)'|(?P<key>[^\s"'#:][^:#]*?))\s*:"""
    r"""(?:\s+|$)(?:"(?P<dq>(?:[^"\\]|\\.)*)"|'(?P<sq>(?:[^']|'')*)'|(?P<bare>[^#]*?))\s*(?:\s#.*)?$"""
)
_INDICATORS = frozenset("[]{}&*!|>%@`-?,")
"""Plain values starting with these are YAML's collections, anchors, tags or block scalars."""
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "t": "\t", "n": "\n"}


def read_dictionary(path: Path) -> dict[str, str | int]:
    """A translate dictionary: quoted or plain keys and values; plain decimal values are integers."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read it: {error}") from error
    entries: dict[str, str | int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#") or line == "---":
            continue
        match = _LINE.match(line)
        bare = match["bare"] if match is not None else None
        if match is None or (bare and (bare[0] in _INDICATORS or ": " in bare)):  # YAML beyond the subset
            raise ConfigError(f"{path}:{number}: not a `key: value` line: {raw!r}")
        key = _unquoted(match, "dq_key", "sq_key", "key")
        if match["dq"] is not None or match["sq"] is not None:
            value: str | int = _unquoted(match, "dq", "sq", "bare")
        else:
            bare = bare or ""
            value = int(bare) if bare.isascii() and bare.isdigit() else bare
        entries[key] = value
    return entries


def _unquoted(match: re.Match[str], double: str, single: str, plain: str) -> str:
    if match[double] is not None:
        return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[1]), match[double])
    if match[single] is not None:
        return match[single].replace("''", "'")
    return (match[plain] or "").strip()


def user_settings(directory: str) -> tuple[dict[str, str], dict[str, int], dict[str, str]]:
    """(interface names as `enrich.interface_names` keys them, default sampling rates by exporter,
    applications by server address and port) from the directory's files; a file that is not
    there gives nothing, a directory that is not there stops start-up."""
    base = Path(directory)
    if not base.is_dir():  # ElastiFlow's translate filters would not start either
        raise ConfigError(
            f"ELASTIFLOW_USER_SETTINGS_PATH: {directory!r} is not a directory (mount it, or unset the variable)"
        )
    names: dict[str, str] = {}
    rates: dict[str, int] = {}
    applications: dict[str, str] = {}
    path = base / INTERFACE_NAMES_FILE
    if path.is_file():
        for key, value in read_dictionary(path).items():
            parsed = _IF_NAME_KEY.match(key)
            if parsed is None or not isinstance(value, str):
                raise ConfigError(f'{path}: {key!r} is not "<exporter>::ifName.<ifIndex>": "<name>"')
            names[f"{parsed['exporter']}:{int(parsed['index'])}"] = value
    path = base / SAMPLING_RATES_FILE
    if path.is_file():
        for key, value in read_dictionary(path).items():
            if not isinstance(value, int):
                raise ConfigError(f"{path}: the rate of {key!r} is not an integer: {value!r}")
            if value > 1:  # 0 and 1 scale nothing, as ElastiFlow read them
                rates[key] = value
    path = base / APPLICATIONS_FILE
    if path.is_file():
        for key, value in read_dictionary(path).items():
            applications[key] = str(value)  # keys are checked with flowd's own table
    return names, rates, applications

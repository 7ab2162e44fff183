"""The README's configuration reference and its test command stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

from flowd.config import ELASTIFLOW_SIMPLE, describe_settings, load_settings

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def test_configuration_reference_is_the_defaults(tmp_path: Path) -> None:
    section = README[README.index("## Configuration reference") :]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    config = tmp_path / "reference.toml"
    config.write_text(block.group(1))
    from_reference = load_settings(config, environ={})
    defaults = load_settings(None, environ={})
    assert from_reference.settings == defaults.settings
    for line in describe_settings(defaults).splitlines():
        key = line.split(" = ")[0].split(".")[-1]
        assert f"\n{key} = " in "\n" + block.group(1), key


def test_ci_runs_the_readme_test_command() -> None:
    commands = re.findall(r"```sh\n(.*?)\n```", README, re.S)[:2]
    test_command = commands[1].split("&&", 1)[1].strip()  # after the apt-get step
    packages = commands[1].split("&&", 1)[0].split("install -y", 1)[1].split()
    ci = (REPO / ".ci" / "run").read_text()
    for package in packages:
        assert package in ci, package  # CI installs what the README tells a developer to install
    assert test_command in (REPO / ".ci" / "run").read_text()


def _expand(name: str) -> list[str]:
    """`a.{b,c}.d` -> `a.b.d`, `a.c.d` (one brace group, as the table writes them)."""
    match = re.search(r"\{([^}]*)\}", name)
    if match is None:
        return [name]
    head, tail = name[: match.start()], name[match.end() :]
    return [expanded for part in match.group(1).split(",") for expanded in _expand(head + part + tail)]


def documented_fields() -> set[str]:
    section = README[README.index("### Document fields") :]
    section = section[: section.index("\n###")]
    fields: set[str] = set()
    for row in re.findall(r"^\| (`.*?) \|", section, re.M):
        for name in re.findall(r"`([^`]+)`", row):
            if name.endswith(".*"):
                continue  # "destination.* the same": the source fields, mirrored below
            for field in _expand(name):
                fields.add(field)
                if "destination" in row and field.startswith("source."):
                    fields.add("destination." + field.removeprefix("source."))
    return fields


def test_document_fields_table_is_the_index_mapping() -> None:
    from flowd.output.index_template import mappings

    mapped: set[str] = set()

    def walk(properties: dict[str, dict[str, object]], prefix: str) -> None:
        for key, node in properties.items():
            if "properties" in node:
                walk(node["properties"], f"{prefix}{key}.")  # type: ignore[arg-type]
            else:
                mapped.add(prefix + key)

    walk(mappings()["properties"], "")
    assert documented_fields() == mapped


def _mapped_types() -> dict[str, str]:
    from flowd.output.index_template import mappings

    types: dict[str, str] = {}

    def walk(properties: dict[str, dict[str, object]], prefix: str) -> None:
        for key, node in properties.items():
            if "properties" in node:
                walk(node["properties"], f"{prefix}{key}.")  # type: ignore[arg-type]
            else:
                types[prefix + key] = str(node["type"])

    walk(mappings()["properties"], "")
    return types


def _slots(name: str, mirrored: bool) -> list[list[str]]:
    """The fields one type of the table's type column stands for: one slot per choice of the name's
    last brace group (`source.{ip,port}`: `ip`, `port`), each with the fields that choice expands to."""
    groups = list(re.finditer(r"\{([^}]*)\}", name))
    choices = (
        [name]
        if not groups
        else [name[: groups[-1].start()] + c + name[groups[-1].end() :] for c in groups[-1].group(1).split(",")]
    )
    slots = []
    for choice in choices:
        fields = _expand(choice)
        if mirrored:
            fields += ["destination." + f.removeprefix("source.") for f in fields if f.startswith("source.")]
        slots.append(fields)
    return slots


def document_field_types() -> dict[str, set[str]]:
    """Field -> the types the table gives it: positional where the type column lists one type per
    name (or per choice of a name's last brace group), else any of the row's types."""
    section = README[README.index("### Document fields") :]
    section = section[: section.index("\n###")]
    documented: dict[str, set[str]] = {}
    for names_cell, types_cell in re.findall(r"^\| (`.*?) \| ([a-z_, ]+) \|", section, re.M):
        mirrored = "destination" in names_cell
        slots = [
            slot
            for name in re.findall(r"`([^`]+)`", names_cell)
            if not name.endswith(".*")
            for slot in _slots(name, mirrored)
        ]
        types = [t.strip() for t in types_cell.split(",")]
        for index, slot in enumerate(slots):
            allowed = {types[0]} if len(types) == 1 else {types[index]} if len(types) == len(slots) else set(types)
            for field in slot:
                documented[field] = allowed
    return documented


def test_document_fields_table_gives_the_mapped_types() -> None:
    mapped = _mapped_types()
    documented = document_field_types()
    assert documented.keys() == mapped.keys()
    wrong = {field: (sorted(types), mapped[field]) for field, types in documented.items() if mapped[field] not in types}
    assert not wrong, wrong


ROOTS = ("source", "destination", "network", "flowd", "observer", "event", "flow", "related")


def test_document_fields_named_in_the_prose_are_mapped() -> None:
    """A document field the README or deploy/README.md names anywhere (`flowd.source_address_class`,
    `destination.geo.*`) is one the index mapping has (file names such as `flowd.toml` aside)."""
    mapped = set(_mapped_types())
    named = re.compile(rf"`((?:{'|'.join(ROOTS)})\.[a-z_.{{}},*]+)`")
    unknown = []
    for text in (README, (REPO / "deploy" / "README.md").read_text()):
        for name in set(named.findall(text)):
            if name.endswith((".toml", ".ndjson")):
                continue
            for field in _expand(name):
                stem = field.removesuffix("*")
                known = any(m.startswith(stem) for m in mapped) if field.endswith("*") else field in mapped
                if not known:
                    unknown.append(field)
    assert not unknown, unknown


def test_metrics_named_in_the_readmes_are_served() -> None:
    """Every `flowd_*` metric the READMEs name is one flowd serves: a counter with `_total` (or by
    its family name), a gauge or histogram without it, and with the labels written beside it."""
    from flowd.server.metrics import METRICS

    wrong = []
    for text in (README, (REPO / "deploy" / "README.md").read_text()):
        for name, labels in re.findall(r"`(flowd_[a-z_]+)(?:\{([^}]*)\})?`", text):
            family = name.removesuffix("_total")
            definition = METRICS.get(family)
            if definition is None or (name != family and definition.kind != "counter"):
                wrong.append(name)
                continue
            for label in filter(None, labels.split(",")):
                if label.split("=")[0].strip() not in definition.labels:
                    wrong.append(f"{name}{{{label}}}")
    assert not wrong, wrong


def test_memo_cache_table_names_every_cache_counted() -> None:
    """The `cache` values of `flowd_memo_cache_clears` the README lists are the ones counted."""
    from flowd.decode.memo import MEMO_CACHES

    section = README[README.index("**Caches that thrash.**") :]
    rows = section[section.index("|---") : section.index("\n\n", section.index("|---"))]
    assert re.findall(r"^\| `([a-z_]+)` \|", rows, re.M) == list(MEMO_CACHES)


USER_SETTINGS_LINES = {
    "enrich.interface_names": '"192.0.2.1::ifName.3": "ge-0/0/3"',
    "enrich.default_sampling_rates": '"192.0.2.1": 512',
    "enrich.endpoint_applications": '"10.1.1.5:8443": "portal"',
}


def _elastiflow_value(key: str) -> str:
    from flowd.config import Settings

    section, name = key.split(".")
    default = getattr(getattr(Settings(), section), name)
    if key == "enrich.nameservers":
        return "192.0.2.53"
    if key == "enrich.resolve_ip2host":
        return "exporters"
    if key.startswith("listen.") and isinstance(default, list):
        return "9995"  # the port variable's value; a host variable is set with its port
    if key == "elasticsearch.hosts":
        return "es1:9200"
    if isinstance(default, bool) or key == "output.raw_fields":
        return "false"
    if isinstance(default, int | float):
        return "1"
    return "/srv/x"


def test_elastiflow_table_is_what_the_loader_honours(tmp_path: Path) -> None:
    """Each variable of the README's ElastiFlow table, set alone, sets the flowd key its row names."""
    section = README[README.index("ElastiFlow 4.x variables honoured") :]
    section = section[: section.index("\n\n", section.index("| ElastiFlow variable"))]
    rows = re.findall(r"^\| (`ELASTIFLOW_.*?) \| (`.*?`)[^|]* \|$", section, re.M)
    assert len(rows) > 20
    assert not [name for name in ELASTIFLOW_SIMPLE if f"`ELASTIFLOW_{name}`" not in section]  # none left out
    wrong = []
    for variables_cell, keys_cell in rows:
        named = re.findall(r"`([A-Z_0-9.{},]+)`", variables_cell.split(":")[0].split("(")[0])
        first = _expand(named[0])[0]
        variables = [
            v
            for name in named
            for v in _expand(name if name.startswith("ELASTIFLOW_") else first.rsplit("_", 2)[0] + name)
        ]
        for key in re.findall(r"`([a-z_]+\.[a-z_0-9]+)`", keys_cell):
            for variable in variables:
                environ = {variable: _elastiflow_value(key)}
                if variable.endswith("_HOST") and key.startswith("listen."):
                    environ = {variable: "127.0.0.1" if "IPV4" in variable else "::1", variable[:-4] + "PORT": "9995"}
                if variable.endswith("_USER_SETTINGS_PATH"):
                    directory = tmp_path / key
                    directory.mkdir(exist_ok=True)
                    file = re.search(r"`(\w+\.yml)`", variables_cell)
                    assert file is not None, variables_cell
                    (directory / file.group(1)).write_text(USER_SETTINGS_LINES[key] + "\n")
                    environ = {variable: str(directory)}
                sources = load_settings(None, environ=environ).sources
                if variable not in sources[key]:
                    wrong.append(f"{variable} -> {key}: {sources[key]}")
    assert not wrong, wrong


def test_sighup_list_is_what_a_reload_applies() -> None:
    from flowd.server.workers import RELOADABLE_SETTINGS

    paragraph = README[README.index("SIGHUP (`kill -HUP") :]
    paragraph = paragraph[: paragraph.index("\n\n")]
    listed = paragraph[: paragraph.index("Every worker reads")]
    named = re.findall(r"`([a-z_.]+)`", listed)
    section = ""
    keys = set()
    for name in named:
        if "." in name:
            section = name.split(".")[0]
            keys.add(name)
        else:
            keys.add(f"{section}.{name}")  # `network_names` after `enrich.internal_networks`
    assert keys == set(RELOADABLE_SETTINGS)

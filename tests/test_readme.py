"""The README's configuration reference and its test command stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

from flowd.config import describe_settings, load_settings

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

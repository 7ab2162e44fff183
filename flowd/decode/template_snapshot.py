"""A template cache's state as JSON, and back: what `TemplateCache.snapshot` writes and
`TemplateCache.restore` reads, so templates outlive a restart.

The worker copies the cache in its event loop (`TemplateCache.capture`, cheap) and renders the
copy here in a thread (`render_snapshot`), since rendering takes seconds at the template cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flowd.decode.records import CompiledTemplate, TemplateField, compile_template

if TYPE_CHECKING:
    from flowd.decode.templates import DomainKey, DomainState, TemplateKey

SNAPSHOT_FORMAT = 1


def snapshot_template(item: dict[str, Any]) -> CompiledTemplate:
    """The template one `TemplateCache.snapshot` entry describes, compiled."""
    fields = tuple(TemplateField(int(e), int(n), int(p)) for e, n, p in item["fields"])
    scope_count = int(item["scope_count"])
    options = bool(item.get("options", scope_count > 0))  # absent from earlier snapshots
    return compile_template(int(item["id"]), fields, scope_count, netflow_v9=int(item["version"]) == 9, options=options)


@dataclass(slots=True, frozen=True)
class SnapshotCopy:
    """A template cache's state at one moment (`TemplateCache.capture`), not yet JSON-able."""

    templates: list[tuple[TemplateKey, CompiledTemplate, float]]
    domains: list[tuple[DomainKey, DomainState]]


def render_snapshot(copy: SnapshotCopy) -> dict[str, Any]:
    """The JSON-able snapshot of a captured cache. Touches only `copy`, so it may run in a thread.

    Templates of the same layout share their field tuple (`compile_template`), so each distinct
    field list is turned into lists once: at 262,144 templates that took most of the time.
    """
    field_lists: dict[int, list[list[int]]] = {}

    def field_list(fields: tuple[TemplateField, ...]) -> list[list[int]]:
        known = field_lists.get(id(fields))
        if known is None:
            known = field_lists[id(fields)] = [[f.element_id, f.length, f.pen] for f in fields]
        return known

    templates = [
        {
            "exporter": list(key[0]),
            "version": key[1],
            "domain": key[2],
            "id": key[3],
            "scope_count": template.scope_count,
            "options": template.options,
            "fields": field_list(template.fields),
            "seen_at": seen_at,
        }
        for key, template, seen_at in copy.templates
    ]
    domains = [
        {
            "exporter": list(key[0]),
            "version": key[1],
            "domain": key[2],
            "sampling_rate": state.sampling_rate,
            "samplers": [[k, v] for k, v in state.samplers.items()],
            "rate_sampler": state.rate_sampler,
            "interface_rates": [[k, v] for k, v in state.interface_rates.items()],
            "system_init_ms": state.system_init_ms,
        }
        for key, state in copy.domains
    ]
    return {"format": SNAPSHOT_FORMAT, "templates": templates, "domains": domains}

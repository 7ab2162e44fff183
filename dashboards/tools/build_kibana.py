"""Generate dashboards/kibana/flowd.ndjson: the Kibana 8.x saved objects for flowd's flow documents.

Run `python dashboards/tools/build_kibana.py` after changing anything here and commit both files;
tests/test_dashboards.py fails when the committed file differs from what this script produces.

Formats are Kibana 8.x's own (as in Kibana's sample data sets): Lens objects keep their layers in
`state.datasourceStates.formBased.layers` with one `indexpattern-datasource-layer-<layer id>`
reference each; dashboards embed panels by reference (`panelRefName` `panel_<i>`, reference name
`<i>:panel_<i>`) and carry a control group whose options-list controls reference the data view as
`controlGroup_<control id>:optionsListDataView`. Kibana migrates objects forward from the
`typeMigrationVersion` they declare, so newer 8.x and 9.x releases import this file too.
Ids are fixed strings and uuid5 values, so regenerating gives byte-identical output.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

DATA_VIEW_ID = "flowd-flows"
DATA_VIEW_PATTERN = "flows-flowd-*"
NAMESPACE = uuid.UUID("6a1f0d1e-4c7e-4b43-9a53-8d0f1d0f1d0d")
PANEL_VERSION = "8.9.0"
CORE_MIGRATION_VERSION = "8.8.0"
OUTPUT = Path(__file__).resolve().parent.parent / "kibana" / "flowd.ndjson"

BYTES = {"id": "bytes", "params": {"decimals": 1}}
BITS_PER_S = {"id": "number", "params": {"decimals": 0, "suffix": " bit/s"}}


def number(suffix: str, decimals: int = 0) -> dict[str, Any]:
    return {"id": "number", "params": {"decimals": decimals, "suffix": suffix}}


PACKETS = number(" pkts")
FLOWS = number(" flows")
ERRORS = number(" errors")
DISCARDS = number(" discards")
DROPS = number(" drops")

FLOW_RECORDS_QUERY = 'event.action : ("netflow_flow" or "sflow_flow")'
COUNTERS_QUERY = 'event.action : "sflow_counters"'
DROPS_QUERY = 'event.action : "sflow_drop"'
DENIED_QUERY = f'{FLOW_RECORDS_QUERY} and event.type : "denied"'


def stable_id(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join(parts)))


# -- Lens columns ------------------------------------------------------------------------------


def date_histogram() -> dict[str, Any]:
    return {
        "label": "@timestamp",
        "dataType": "date",
        "operationType": "date_histogram",
        "sourceField": "@timestamp",
        "isBucketed": True,
        "scale": "interval",
        "params": {"interval": "auto", "includeEmptyRows": True, "dropPartials": False},
    }


def terms(
    field: str,
    label: str,
    order_by: str | None,
    *,
    size: int = 10,
    data_type: str = "string",
    secondary: Iterable[str] = (),
    other: bool = True,
    missing: bool = False,
) -> dict[str, Any]:
    """Top values of `field`, ordered by the metric column `order_by` (alphabetically when None)."""
    params: dict[str, Any] = {
        "size": size,
        "orderBy": {"type": "column", "columnId": order_by} if order_by else {"type": "alphabetical"},
        "orderDirection": "desc" if order_by else "asc",
        "otherBucket": other,
        "missingBucket": missing,
        "parentFormat": {"id": "multi_terms" if secondary else "terms"},
        "include": [],
        "exclude": [],
        "includeIsRegex": False,
        "excludeIsRegex": False,
    }
    if secondary:
        params["secondaryFields"] = list(secondary)
    return {
        "label": label,
        "customLabel": True,
        "dataType": data_type,
        "operationType": "terms",
        "sourceField": field,
        "isBucketed": True,
        "scale": "ordinal",
        "params": params,
    }


def filters(label: str, queries: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "label": label,
        "customLabel": True,
        "dataType": "string",
        "operationType": "filters",
        "isBucketed": True,
        "scale": "ordinal",
        "params": {"filters": [{"input": {"query": kql, "language": "kuery"}, "label": name} for name, kql in queries]},
    }


def metric(
    operation: str,
    field: str,
    label: str,
    fmt: dict[str, Any],
    *,
    per_second: bool = False,
    kql_filter: str | None = None,
) -> dict[str, Any]:
    """sum/avg/max/min/unique_count/last_value of `field`, or count when `field` is `___records___`."""
    column: dict[str, Any] = {
        "label": label,
        "customLabel": True,
        "dataType": "number",
        "operationType": operation,
        "sourceField": field,
        "isBucketed": False,
        "scale": "ratio",
        "params": {"emptyAsNull": True, "format": fmt},
    }
    if operation == "last_value":
        column["params"] = {"sortField": "@timestamp", "showArrayValues": False, "format": fmt}
    if per_second:
        column["timeScale"] = "s"
    if kql_filter:
        column["filter"] = {"query": kql_filter, "language": "kuery"}
    return column


def count(label: str, fmt: dict[str, Any] = FLOWS, *, per_second: bool = False) -> dict[str, Any]:
    return metric("count", "___records___", label, fmt, per_second=per_second)


def counter_rate(reference: str, label: str, fmt: dict[str, Any]) -> dict[str, Any]:
    """Per-second rate of a monotonic counter (sFlow interface counters), from its max per bucket."""
    return {
        "label": label,
        "customLabel": True,
        "dataType": "number",
        "operationType": "counter_rate",
        "isBucketed": False,
        "scale": "ratio",
        "references": [reference],
        "timeScale": "s",
        "params": {"format": fmt},
    }


class Layer:
    """One formBased layer: columns in order (bucket columns first, as Lens nests them)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.id = stable_id(key, "layer")
        self.columns: dict[str, dict[str, Any]] = {}

    def add(self, name: str, column: dict[str, Any]) -> str:
        column_id = stable_id(self.key, name)
        self.columns[column_id] = column
        return column_id

    def state(self) -> dict[str, Any]:
        bucketed = [cid for cid, col in self.columns.items() if col["isBucketed"]]
        metrics = [cid for cid, col in self.columns.items() if not col["isBucketed"]]
        return {"columns": self.columns, "columnOrder": bucketed + metrics, "incompleteColumns": {}}


# -- Lens visualizations -----------------------------------------------------------------------


def lens(
    object_id: str,
    title: str,
    description: str,
    visualization_type: str,
    layer: Layer,
    visualization: dict[str, Any],
    query: str = "",
) -> dict[str, Any]:
    return {
        "id": object_id,
        "type": "lens",
        "attributes": {
            "title": title,
            "description": description,
            "visualizationType": visualization_type,
            "state": {
                "datasourceStates": {"formBased": {"layers": {layer.id: layer.state()}}},
                "visualization": visualization,
                "query": {"query": query, "language": "kuery"},
                "filters": [],
                "internalReferences": [],
                "adHocDataViews": {},
            },
        },
        "references": [
            {"type": "index-pattern", "id": DATA_VIEW_ID, "name": f"indexpattern-datasource-layer-{layer.id}"}
        ],
        "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "typeMigrationVersion": "8.9.0",
    }


def xy_visualization(
    layer: Layer,
    x: str,
    accessors: list[str],
    *,
    split: str | None = None,
    series: str = "line",
    y_title: str,
    x_title: str | None = None,
) -> dict[str, Any]:
    data_layer: dict[str, Any] = {
        "layerId": layer.id,
        "layerType": "data",
        "seriesType": series,
        "xAccessor": x,
        "accessors": accessors,
        "position": "top",
        "showGridlines": False,
        "palette": {"type": "palette", "name": "default"},
    }
    if split:
        data_layer["splitAccessor"] = split
    visualization: dict[str, Any] = {
        "legend": {"isVisible": True, "position": "right", "shouldTruncate": True, "maxLines": 1},
        "valueLabels": "hide",
        "fittingFunction": "Linear" if series.startswith(("line", "area")) else "None",
        "preferredSeriesType": series,
        "yTitle": y_title,
        "axisTitlesVisibilitySettings": {"x": x_title is not None, "yLeft": True, "yRight": True},
        "tickLabelsVisibilitySettings": {"x": True, "yLeft": True, "yRight": True},
        "gridlinesVisibilitySettings": {"x": True, "yLeft": True, "yRight": True},
        "layers": [data_layer],
    }
    if x_title is not None:
        visualization["xTitle"] = x_title
    return visualization


def time_series(
    object_id: str,
    title: str,
    description: str,
    metrics: list[tuple[str, dict[str, Any]]],
    *,
    y_title: str,
    split: dict[str, Any] | None = None,
    series: str = "line",
    query: str = "",
    helpers: list[tuple[str, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Metrics over @timestamp, optionally split by a terms column; `helpers` are hidden columns
    that other columns reference (the max behind a counter rate).

    The split comes before the date histogram in the column order, as Lens itself puts a terms
    column "above the first date histogram": aggregations nest in column order, so the top values
    are ranked over the whole time range and each series is the same value from end to end. With
    the date histogram first, every interval ranked its own top values (more series than `size`,
    lines broken where a value left an interval's top, counter rates lost after each gap)."""
    layer = Layer(object_id)
    split_id = layer.add("split", split) if split else None
    x = layer.add("time", date_histogram())
    for name, column in helpers or []:
        layer.add(name, column)
    accessors = [layer.add(name, column) for name, column in metrics]
    visualization = xy_visualization(layer, x, accessors, split=split_id, series=series, y_title=y_title)
    return lens(object_id, title, description, "lnsXY", layer, visualization, query)


def top_bar(
    object_id: str,
    title: str,
    description: str,
    field: str,
    label: str,
    value: dict[str, Any],
    *,
    size: int = 10,
    data_type: str = "string",
    query: str = "",
) -> dict[str, Any]:
    """Horizontal bars: the top `size` values of `field` by `value`."""
    layer = Layer(object_id)
    value_id = stable_id(object_id, "value")
    x = layer.add("group", terms(field, label, value_id, size=size, data_type=data_type))
    layer.add("value", value)
    visualization = xy_visualization(
        layer, x, [value_id], series="bar_horizontal", y_title=value["label"], x_title=label
    )
    return lens(object_id, title, description, "lnsXY", layer, visualization, query)


def donut(
    object_id: str, title: str, description: str, group: dict[str, Any], value: dict[str, Any], query: str = ""
) -> dict[str, Any]:
    layer = Layer(object_id)
    value_id = stable_id(object_id, "value")
    if group["operationType"] == "terms":
        group["params"]["orderBy"] = {"type": "column", "columnId": value_id}
        group["params"]["orderDirection"] = "desc"
    group_id = layer.add("group", group)
    layer.add("value", value)
    visualization = {
        "shape": "donut",
        "layers": [
            {
                "layerId": layer.id,
                "layerType": "data",
                "primaryGroups": [group_id],
                "metrics": [value_id],
                "numberDisplay": "percent",
                "categoryDisplay": "default",
                "legendDisplay": "show",
                "nestedLegend": False,
            }
        ],
    }
    return lens(object_id, title, description, "lnsPie", layer, visualization, query)


def single_metric(
    object_id: str, title: str, description: str, value: dict[str, Any], query: str = ""
) -> dict[str, Any]:
    layer = Layer(object_id)
    value_id = layer.add("value", value)
    visualization = {"layerId": layer.id, "layerType": "data", "metricAccessor": value_id}
    return lens(object_id, title, description, "lnsMetric", layer, visualization, query)


def table(
    object_id: str,
    title: str,
    description: str,
    rows: list[tuple[str, dict[str, Any]]],
    values: list[tuple[str, dict[str, Any]]],
    *,
    order_by: str | None = None,
    query: str = "",
) -> dict[str, Any]:
    """Rows are nested terms (or filters) columns, each ordered by the value named `order_by`
    (the first value when None)."""
    layer = Layer(object_id)
    order_name = order_by or values[0][0]
    order_id = stable_id(object_id, order_name)
    for name, column in rows:
        if column["operationType"] == "terms" and column["params"]["orderBy"]["type"] == "column":
            column["params"]["orderBy"] = {"type": "column", "columnId": order_id}
        layer.add(name, column)
    for name, column in values:
        layer.add(name, column)
    visualization = {
        "layerId": layer.id,
        "layerType": "data",
        "columns": [{"columnId": cid, "isTransposed": False} for cid in layer.columns],
        "rowHeight": "single",
        "headerRowHeight": "single",
        "paging": {"enabled": True, "size": 20},
    }
    return lens(object_id, title, description, "lnsDatatable", layer, visualization, query)


def rows_by(
    field: str,
    label: str,
    *,
    size: int = 10,
    data_type: str = "string",
    missing: bool = False,
    secondary: Iterable[str] = (),
    other: bool = True,
) -> dict[str, Any]:
    """A table's terms column; `table()` points its ordering at the table's order column."""
    return terms(
        field, label, "pending", size=size, data_type=data_type, missing=missing, secondary=secondary, other=other
    )


def bytes_sum(label: str = "Bytes", field: str = "network.bytes", **kwargs: Any) -> dict[str, Any]:
    return metric("sum", field, label, BYTES, **kwargs)


def packets_sum(label: str = "Packets", field: str = "network.packets", **kwargs: Any) -> dict[str, Any]:
    return metric("sum", field, label, PACKETS, **kwargs)


# -- Maps ---------------------------------------------------------------------------------------


def geo_map(object_id: str, title: str, description: str, geo_field: str, label: str) -> dict[str, Any]:
    """A Maps object: base map, a heat map of flow records and grid points sized and coloured by bytes."""
    bytes_field = {"name": "sum_of_network.bytes", "origin": "source"}
    layers = [
        {
            "id": stable_id(object_id, "basemap"),
            "label": None,
            "type": "EMS_VECTOR_TILE",
            "sourceDescriptor": {"type": "EMS_TMS", "isAutoSelect": True, "lightModeDefault": "road_map_desaturated"},
            "style": {"type": "EMS_VECTOR_TILE", "color": ""},
            "minZoom": 0,
            "maxZoom": 24,
            "alpha": 1,
            "visible": True,
            "includeInFitToBounds": True,
        },
        {
            "id": stable_id(object_id, "heat"),
            "label": f"{label}: flow records (heat map)",
            "type": "HEATMAP",
            "sourceDescriptor": {
                "type": "ES_GEO_GRID",
                "id": stable_id(object_id, "heat-source"),
                "geoField": geo_field,
                "requestType": "heatmap",
                "resolution": "COARSE",
                "metrics": [{"type": "count", "label": "Flow records"}],
                "applyGlobalQuery": True,
                "applyGlobalTime": True,
                "applyForceRefresh": True,
                "indexPatternRefName": "layer_1_source_index_pattern",
            },
            "style": {"type": "HEATMAP", "colorRampName": "theclassic"},
            "minZoom": 0,
            "maxZoom": 24,
            "alpha": 0.75,
            "visible": True,
            "includeInFitToBounds": True,
        },
        {
            "id": stable_id(object_id, "points"),
            "label": f"{label}: bytes",
            "type": "GEOJSON_VECTOR",
            "sourceDescriptor": {
                "type": "ES_GEO_GRID",
                "id": stable_id(object_id, "points-source"),
                "geoField": geo_field,
                "requestType": "point",
                "resolution": "FINE",
                "metrics": [{"type": "sum", "field": "network.bytes", "label": "Bytes"}, {"type": "count"}],
                "applyGlobalQuery": True,
                "applyGlobalTime": True,
                "applyForceRefresh": True,
                "indexPatternRefName": "layer_2_source_index_pattern",
            },
            "style": {
                "type": "VECTOR",
                "isTimeAware": True,
                "properties": {
                    "icon": {"type": "STATIC", "options": {"value": "marker"}},
                    "fillColor": {
                        "type": "DYNAMIC",
                        "options": {
                            "color": "Blues",
                            "field": bytes_field,
                            "fieldMetaOptions": {"isEnabled": True, "sigma": 3},
                        },
                    },
                    "lineColor": {"type": "STATIC", "options": {"color": "#FFFFFF"}},
                    "lineWidth": {"type": "STATIC", "options": {"size": 1}},
                    "iconSize": {
                        "type": "DYNAMIC",
                        "options": {
                            "minSize": 4,
                            "maxSize": 32,
                            "field": bytes_field,
                            "fieldMetaOptions": {"isEnabled": True, "sigma": 3},
                        },
                    },
                    "symbolizeAs": {"options": {"value": "circle"}},
                    "labelText": {"type": "STATIC", "options": {"value": ""}},
                },
            },
            "minZoom": 0,
            "maxZoom": 24,
            "alpha": 0.8,
            "visible": True,
            "includeInFitToBounds": True,
            "joins": [],
        },
    ]
    map_state = {
        "zoom": 1.4,
        "center": {"lon": 0, "lat": 25},
        "timeFilters": {"from": "now-24h", "to": "now"},
        "refreshConfig": {"isPaused": True, "interval": 0},
        "query": {"query": FLOW_RECORDS_QUERY, "language": "kuery"},
        "filters": [],
        "settings": {"autoFitToDataBounds": False},
    }
    return {
        "id": object_id,
        "type": "map",
        "attributes": {
            "title": title,
            "description": description,
            "mapStateJSON": json.dumps(map_state),
            "layerListJSON": json.dumps(layers),
            "uiStateJSON": json.dumps({"isLayerTOCOpen": True, "openTOCDetails": []}),
        },
        "references": [
            {"name": "layer_1_source_index_pattern", "type": "index-pattern", "id": DATA_VIEW_ID},
            {"name": "layer_2_source_index_pattern", "type": "index-pattern", "id": DATA_VIEW_ID},
        ],
        "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "typeMigrationVersion": "8.4.0",
    }


# -- Data view, saved search, dashboards --------------------------------------------------------

FIELD_FORMATS = {
    **{field: BYTES for field in ("network.bytes", "source.bytes", "destination.bytes", "flowd.raw_bytes")},
    **{field: BYTES for field in ("sflow.if_in_octets", "sflow.if_out_octets", "sflow.frame_length")},
    **{field: PACKETS for field in ("network.packets", "source.packets", "destination.packets")},
    "event.duration": {"id": "duration", "params": {"inputFormat": "nanoseconds", "outputFormat": "humanizePrecise"}},
    "sflow.if_speed": BITS_PER_S,
}
FIELD_LABELS = {
    "observer.ip": "Exporter",
    "observer.ingress.interface.name": "Input interface",
    "observer.egress.interface.name": "Output interface",
    "observer.ingress.interface.id": "Input ifIndex",
    "observer.egress.interface.id": "Output ifIndex",
    "network.bytes": "Bytes (sampling-corrected)",
    "network.packets": "Packets (sampling-corrected)",
    "flowd.sampling_rate": "Sampling rate (1 in N)",
}


def data_view() -> dict[str, Any]:
    return {
        "id": DATA_VIEW_ID,
        "type": "index-pattern",
        "attributes": {
            "title": DATA_VIEW_PATTERN,
            "name": "flowd flows",
            "timeFieldName": "@timestamp",
            "fieldFormatMap": json.dumps(FIELD_FORMATS, sort_keys=True),
            "fieldAttrs": json.dumps({field: {"customLabel": label} for field, label in FIELD_LABELS.items()}),
            "fields": "[]",
            "runtimeFieldMap": "{}",
            "sourceFilters": "[]",
            "typeMeta": "{}",
            "allowNoIndex": True,
        },
        "references": [],
        "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "typeMigrationVersion": "8.0.0",
    }


FLOW_RECORD_COLUMNS = [
    "observer.ip",
    "observer.ingress.interface.name",
    "observer.egress.interface.name",
    "source.ip",
    "source.port",
    "destination.ip",
    "destination.port",
    "network.transport",
    "network.application",
    "network.direction",
    "network.bytes",
    "network.packets",
    "source.as.number",
    "destination.as.number",
    "source.geo.country_iso_code",
    "destination.geo.country_iso_code",
    "event.duration",
]


def saved_search() -> dict[str, Any]:
    search_source = {
        "query": {"query": FLOW_RECORDS_QUERY, "language": "kuery"},
        "filter": [],
        "highlightAll": True,
        "version": True,
        "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index",
    }
    return {
        "id": "flowd-search-flow-records",
        "type": "search",
        "attributes": {
            "title": "[flowd] Flow records",
            "description": "Every flow record and sFlow flow sample, newest first, with the columns an operator reads.",
            "columns": FLOW_RECORD_COLUMNS,
            "sort": [["@timestamp", "desc"]],
            "grid": {},
            "hideChart": False,
            "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(search_source)},
        },
        "references": [
            {"name": "kibanaSavedObjectMeta.searchSourceJSON.index", "type": "index-pattern", "id": DATA_VIEW_ID}
        ],
        "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "typeMigrationVersion": "8.0.0",
    }


CONTROLS = [
    ("exporter", "observer.ip", "Exporter"),
    ("ingress", "observer.ingress.interface.name", "Input interface"),
    ("egress", "observer.egress.interface.name", "Output interface"),
    ("direction", "network.direction", "Direction"),
    ("protocol", "network.transport", "Protocol"),
]


def control_group(dashboard_id: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
    panels: dict[str, Any] = {}
    references = []
    for order, (key, field, title) in enumerate(CONTROLS):
        control_id = stable_id(dashboard_id, "control", key)
        panels[control_id] = {
            "order": order,
            "width": "medium",
            "grow": True,
            "type": "optionsListControl",
            "explicitInput": {
                "id": control_id,
                "fieldName": field,
                "title": title,
                "selectedOptions": [],
                "searchTechnique": "prefix",
                "enhancements": {},
            },
        }
        references.append(
            {"name": f"controlGroup_{control_id}:optionsListDataView", "type": "index-pattern", "id": DATA_VIEW_ID}
        )
    group = {
        "controlStyle": "oneLine",
        "chainingSystem": "HIERARCHICAL",
        "panelsJSON": json.dumps(panels),
        "ignoreParentSettingsJSON": json.dumps(
            {"ignoreFilters": False, "ignoreQuery": False, "ignoreTimerange": False, "ignoreValidations": False}
        ),
    }
    return group, references


def dashboard(
    dashboard_id: str, title: str, description: str, panels: list[tuple[dict[str, Any], int, int]]
) -> dict[str, Any]:
    """`panels`: (saved object, width, height) laid out left to right on Kibana's 48-column grid."""
    panels_json: list[dict[str, Any]] = []
    references: list[dict[str, str]] = []
    x = y = row_height = 0
    for index, (saved_object, width, height) in enumerate(panels):
        if x + width > 48:
            x, y, row_height = 0, y + row_height, 0
        panel_index = str(index + 1)
        panels_json.append(
            {
                "version": PANEL_VERSION,
                "type": saved_object["type"],
                "gridData": {"x": x, "y": y, "w": width, "h": height, "i": panel_index},
                "panelIndex": panel_index,
                "embeddableConfig": {"enhancements": {}},
                "panelRefName": f"panel_{panel_index}",
            }
        )
        references.append(
            {"name": f"{panel_index}:panel_{panel_index}", "type": saved_object["type"], "id": saved_object["id"]}
        )
        x += width
        row_height = max(row_height, height)
    controls, control_references = control_group(dashboard_id)
    return {
        "id": dashboard_id,
        "type": "dashboard",
        "attributes": {
            "title": title,
            "description": description,
            "panelsJSON": json.dumps(panels_json),
            "optionsJSON": json.dumps(
                {
                    "useMargins": True,
                    "syncColors": False,
                    "syncCursor": True,
                    "syncTooltips": False,
                    "hidePanelTitles": False,
                }
            ),
            "timeRestore": True,
            "timeFrom": "now-24h",
            "timeTo": "now",
            "refreshInterval": {"pause": False, "value": 60000},
            "controlGroupInput": controls,
            "kibanaSavedObjectMeta": {
                "searchSourceJSON": json.dumps({"query": {"query": "", "language": "kuery"}, "filter": []})
            },
            "version": 1,
        },
        "references": references + control_references,
        "coreMigrationVersion": CORE_MIGRATION_VERSION,
        "typeMigrationVersion": "8.9.0",
    }


# -- The dashboards -------------------------------------------------------------------------------


def overview() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    p = "flowd-overview-"
    q = FLOW_RECORDS_QUERY
    objects = [
        single_metric(p + "bytes", "Traffic volume", "Bytes of all flows (sampling-corrected)", bytes_sum(), q),
        single_metric(p + "packets", "Packets", "Packets of all flows (sampling-corrected)", packets_sum(), q),
        single_metric(p + "flows", "Flow records", "Flow records and sFlow flow samples", count("Flow records"), q),
        single_metric(
            p + "sources",
            "Distinct sources",
            "Distinct source addresses",
            metric("unique_count", "source.ip", "Sources", number(" addresses")),
            q,
        ),
        time_series(
            p + "bytes-time",
            "Traffic (bytes/s)",
            "Bytes per second, all exporters",
            [("bytes", bytes_sum("Bytes/s", per_second=True))],
            y_title="Bytes/s",
            series="area",
            query=q,
        ),
        time_series(
            p + "packets-time",
            "Packets/s",
            "Packets per second, all exporters",
            [("packets", packets_sum("Packets/s", per_second=True))],
            y_title="Packets/s",
            query=q,
        ),
        time_series(
            p + "flows-time",
            "Flows/s",
            "Flow records per second",
            [("flows", count("Flows/s", per_second=True))],
            y_title="Flows/s",
            query=q,
        ),
        time_series(
            p + "exporters-time",
            "Traffic by exporter (bytes/s)",
            "Bytes per second of the top exporters",
            [("bytes", bytes_sum("Bytes/s", per_second=True))],
            y_title="Bytes/s",
            series="area_stacked",
            split=terms("observer.ip", "Exporter", stable_id(p + "exporters-time", "bytes"), size=10, data_type="ip"),
            query=q,
        ),
        top_bar(
            p + "talkers",
            "Top talkers (bytes)",
            "Source addresses that sent the most bytes",
            "source.ip",
            "Source",
            bytes_sum(),
            data_type="ip",
            query=q,
        ),
        donut(
            p + "applications",
            "Top applications (bytes)",
            "Bytes by application or service name",
            terms("network.application", "Application", None, size=10),
            bytes_sum(),
            q,
        ),
        donut(
            p + "protocols",
            "Protocols (bytes)",
            "Bytes by transport protocol",
            terms("network.transport", "Protocol", None, size=10),
            bytes_sum(),
            q,
        ),
        table(
            p + "exporters",
            "Exporters",
            "Traffic each exporter reported (with the name enrich.exporter_names gives it)",
            [
                ("exporter", rows_by("observer.ip", "Exporter", size=50, data_type="ip")),
                ("name", rows_by("observer.name", "Name", size=1, missing=True, other=False)),
            ],
            [("bytes", bytes_sum()), ("packets", packets_sum()), ("flows", count("Flow records"))],
            query=q,
        ),
    ]
    sizes = [(12, 6)] * 4 + [(24, 12)] * 4 + [(16, 14)] * 3 + [(48, 12)]
    return objects, dashboard(
        "flowd-dashboard-overview",
        "[flowd] Overview",
        "Traffic over time, top talkers, applications, protocols and exporters.",
        list(zip(objects, *zip(*sizes, strict=True), strict=True)),
    )


def endpoint_table(
    object_id: str, title: str, description: str, field: str, label: str, data_type: str = "string"
) -> dict[str, Any]:
    return table(
        object_id,
        title,
        description,
        [("group", rows_by(field, label, size=20, data_type=data_type))],
        [("bytes", bytes_sum()), ("packets", packets_sum()), ("flows", count("Flow records"))],
        query=FLOW_RECORDS_QUERY,
    )


def top_n() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    p = "flowd-topn-"
    q = FLOW_RECORDS_QUERY
    objects = [
        endpoint_table(p + "sources", "Top sources", "Source addresses by bytes", "source.ip", "Source", "ip"),
        endpoint_table(
            p + "destinations",
            "Top destinations",
            "Destination addresses by bytes",
            "destination.ip",
            "Destination",
            "ip",
        ),
        endpoint_table(
            p + "services", "Top services", "Applications and service names by bytes", "network.application", "Service"
        ),
        endpoint_table(
            p + "server-ports",
            "Top server ports",
            "Destination ports by bytes",
            "destination.port",
            "Destination port",
            "number",
        ),
        endpoint_table(
            p + "client-ports", "Top client ports", "Source ports by bytes", "source.port", "Source port", "number"
        ),
        table(
            p + "conversations",
            "Top conversations",
            "Source and destination address pairs by bytes",
            [
                (
                    "pair",
                    rows_by("source.ip", "Source → destination", size=20, data_type="ip", secondary=["destination.ip"]),
                )
            ],
            [("bytes", bytes_sum()), ("packets", packets_sum()), ("flows", count("Flow records"))],
            query=q,
        ),
        top_bar(
            p + "transports",
            "Top protocols (bytes)",
            "Transport protocols by bytes",
            "network.transport",
            "Protocol",
            bytes_sum(),
            query=q,
        ),
        top_bar(
            p + "source-domains",
            "Top source names (bytes)",
            "Reverse DNS names of sources by bytes",
            "source.domain",
            "Source name",
            bytes_sum(),
            query=q,
        ),
    ]
    sizes = [(24, 14)] * 6 + [(24, 12)] * 2
    return objects, dashboard(
        "flowd-dashboard-top-n",
        "[flowd] Top-N",
        "Top sources, destinations, services, client and server ports, and conversations.",
        list(zip(objects, *zip(*sizes, strict=True), strict=True)),
    )


def geo() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    p = "flowd-geo-"
    q = FLOW_RECORDS_QUERY

    def pairs(suffix: str, title: str, description: str, field: str, noun: str) -> dict[str, Any]:
        """Bytes and flows from each source `field` value to each destination one."""
        return table(
            p + suffix,
            title,
            description,
            [
                ("source", rows_by(f"source.{field}", f"Source {noun}", size=20)),
                ("destination", rows_by(f"destination.{field}", f"Destination {noun}", size=10)),
            ],
            [("bytes", bytes_sum()), ("flows", count("Flow records"))],
            query=q,
        )

    objects = [
        geo_map(
            p + "source-map",
            "Source locations",
            "Where traffic comes from (GeoIP of source.ip)",
            "source.geo.location",
            "Sources",
        ),
        geo_map(
            p + "destination-map",
            "Destination locations",
            "Where traffic goes (GeoIP of destination.ip)",
            "destination.geo.location",
            "Destinations",
        ),
        top_bar(
            p + "source-countries",
            "Top source countries (bytes)",
            "Bytes by source country",
            "source.geo.country_name",
            "Source country",
            bytes_sum(),
            query=q,
        ),
        top_bar(
            p + "destination-countries",
            "Top destination countries (bytes)",
            "Bytes by destination country",
            "destination.geo.country_name",
            "Destination country",
            bytes_sum(),
            query=q,
        ),
        top_bar(
            p + "source-cities",
            "Top source cities (bytes)",
            "Bytes by source city",
            "source.geo.city_name",
            "Source city",
            bytes_sum(),
            query=q,
        ),
        top_bar(
            p + "destination-cities",
            "Top destination cities (bytes)",
            "Bytes by destination city",
            "destination.geo.city_name",
            "Destination city",
            bytes_sum(),
            query=q,
        ),
        pairs(
            "country-pairs",
            "Country to country",
            "Bytes between source and destination countries",
            "geo.country_iso_code",
            "country",
        ),
        donut(
            p + "continents",
            "Destination continents (bytes)",
            "Bytes by destination continent",
            terms("destination.geo.continent_name", "Continent", None, size=10),
            bytes_sum(),
            q,
        ),
        pairs(
            "named-networks",
            "Named networks",
            "Bytes between the networks named in enrich.network_names (source.geo.name, destination.geo.name)",
            "geo.name",
            "network",
        ),
    ]
    sizes = [(24, 18)] * 2 + [(24, 12)] * 4 + [(32, 14), (16, 14), (48, 14)]
    return objects, dashboard(
        "flowd-dashboard-geo",
        "[flowd] Geo",
        "Source and destination maps, countries and cities (needs GeoIP enrichment), and the traffic "
        "between the networks you name (enrich.network_names).",
        list(zip(objects, *zip(*sizes, strict=True), strict=True)),
    )


def autonomous_systems() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    p = "flowd-as-"
    q = FLOW_RECORDS_QUERY

    def as_table(side: str, title: str) -> dict[str, Any]:
        return table(
            f"{p}{side}",
            title,
            f"{side.capitalize()} autonomous systems by bytes",
            [
                ("number", rows_by(f"{side}.as.number", f"{side.capitalize()} AS", size=20, data_type="number")),
                ("name", rows_by(f"{side}.as.organization.name", "Organisation", size=1, missing=True, other=False)),
            ],
            [("bytes", bytes_sum()), ("packets", packets_sum()), ("flows", count("Flow records"))],
            query=q,
        )

    objects = [
        as_table("source", "Top source AS"),
        as_table("destination", "Top destination AS"),
        table(
            p + "pairs",
            "AS to AS",
            "Bytes between source and destination autonomous systems",
            [
                ("source", rows_by("source.as.number", "Source AS", size=20, data_type="number")),
                ("destination", rows_by("destination.as.number", "Destination AS", size=10, data_type="number")),
            ],
            [("bytes", bytes_sum()), ("flows", count("Flow records"))],
            query=q,
        ),
        time_series(
            p + "source-time",
            "Traffic by source AS (bytes/s)",
            "Bytes per second of the top source AS",
            [("bytes", bytes_sum("Bytes/s", per_second=True))],
            y_title="Bytes/s",
            series="area_stacked",
            split=terms("source.as.organization.name", "Source AS", stable_id(p + "source-time", "bytes"), size=10),
            query=q,
        ),
        top_bar(
            p + "destination-orgs",
            "Top destination AS organisations (bytes)",
            "Bytes by destination AS organisation",
            "destination.as.organization.name",
            "Organisation",
            bytes_sum(),
            query=q,
        ),
    ]
    sizes = [(24, 14)] * 2 + [(48, 14)] + [(24, 12)] * 2
    return objects, dashboard(
        "flowd-dashboard-as",
        "[flowd] Autonomous systems",
        "Top source and destination AS, and AS-to-AS traffic (from the ASN database or the exporter's BGP AS).",
        list(zip(objects, *zip(*sizes, strict=True), strict=True)),
    )


def exporters_interfaces() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    p = "flowd-exporters-"
    q = FLOW_RECORDS_QUERY

    def interface_table(side: str, title: str) -> dict[str, Any]:
        return table(
            f"{p}{side}",
            title,
            f"Bytes per exporter and {side} interface",
            [
                ("exporter", rows_by("observer.ip", "Exporter", size=20, data_type="ip")),
                ("ifindex", rows_by(f"observer.{side}.interface.id", "ifIndex", size=20, data_type="number")),
                ("name", rows_by(f"observer.{side}.interface.name", "Interface", size=1, missing=True, other=False)),
            ],
            [("bytes", bytes_sum()), ("packets", packets_sum()), ("flows", count("Flow records"))],
            query=q,
        )

    def interface_time(side: str, title: str) -> dict[str, Any]:
        object_id = f"{p}{side}-time"
        return time_series(
            object_id,
            title,
            f"Bytes per second by exporter and {side} ifIndex (top 10)",
            [("bytes", bytes_sum("Bytes/s", per_second=True))],
            y_title="Bytes/s",
            series="area_stacked",
            # An ifIndex is only unique within its exporter: the series is the pair.
            split=terms(
                "observer.ip",
                f"Exporter › {side} ifIndex",
                stable_id(object_id, "bytes"),
                size=10,
                data_type="ip",
                secondary=[f"observer.{side}.interface.id"],
            ),
            query=q,
        )

    objects = [
        interface_table("ingress", "Input interfaces"),
        interface_table("egress", "Output interfaces"),
        interface_time("ingress", "Input interface traffic (bytes/s)"),
        interface_time("egress", "Output interface traffic (bytes/s)"),
        table(
            p + "sampling",
            "Sampling rates",
            "Sampling rate (1 in N) each exporter applies, with its flows",
            [
                ("exporter", rows_by("observer.ip", "Exporter", size=50, data_type="ip")),
                ("name", rows_by("observer.name", "Name", size=1, missing=True, other=False)),
                ("rate", rows_by("flowd.sampling_rate", "Sampling rate (1 in N)", size=5, data_type="number")),
            ],
            [
                ("flows", count("Flow records")),
                ("raw", metric("sum", "flowd.raw_bytes", "Bytes seen", BYTES)),
                ("bytes", bytes_sum("Bytes (corrected)")),
            ],
            query=q,
        ),
        donut(
            p + "direction",
            "Direction (bytes)",
            "Bytes by direction against the configured internal networks",
            filters(
                "Direction",
                [
                    (name.capitalize(), f'network.direction : "{name}"')
                    for name in ("inbound", "outbound", "internal", "external", "unknown")
                ],
            ),
            bytes_sum(),
            q,
        ),
        top_bar(
            p + "versions",
            "Flow records by protocol version",
            "Flow records by NetFlow/IPFIX version",
            "netflow.exporter.version",
            "Version",
            count("Flow records"),
            data_type="number",
            query=q,
        ),
    ]
    sizes = [(24, 14)] * 2 + [(24, 12)] * 2 + [(24, 12), (12, 12), (12, 12)]
    return objects, dashboard(
        "flowd-dashboard-exporters",
        "[flowd] Exporters and interfaces",
        "Traffic per exporter and ifIndex/name, input and output, and the sampling rates in use.",
        list(zip(objects, *zip(*sizes, strict=True), strict=True)),
    )


def flow_records() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    search = saved_search()
    histogram = time_series(
        "flowd-records-count",
        "Flow records over time",
        "Flow records per second",
        [("flows", count("Flows/s", per_second=True))],
        y_title="Flows/s",
        series="bar",
        query=FLOW_RECORDS_QUERY,
    )
    denied = time_series(
        "flowd-records-denied",
        "Denied flows (flows/s)",
        "Flow records of firewall flow-denied events (NSEL, IPFIX firewallEvent 3) and of flows the"
        " exporter dropped (forwardingStatus), per exporter",
        [("flows", count("Denied flows/s", per_second=True))],
        y_title="Flows/s",
        split=terms("observer.ip", "Exporter", stable_id("flowd-records-denied", "flows"), size=10, data_type="ip"),
        series="bar_stacked",
        query=DENIED_QUERY,
    )
    denied_sources = top_bar(
        "flowd-records-denied-sources",
        "Top denied sources",
        "Source addresses with the most denied or dropped flow records",
        "source.ip",
        "Source",
        count("Denied flows"),
        size=10,
        data_type="ip",
        query=DENIED_QUERY,
    )
    return [search, histogram, denied, denied_sources], dashboard(
        "flowd-dashboard-flow-records",
        "[flowd] Flow records",
        "The flow records themselves, newest first; flows a firewall denied or a router dropped.",
        [(histogram, 48, 8), (denied, 24, 10), (denied_sources, 24, 10), (search, 48, 30)],
    )


def sflow_counters() -> tuple[list[dict[str, Any]], dict[str, Any]]:
    p = "flowd-sflow-"
    q = COUNTERS_QUERY

    def per_interface(
        name: str, title: str, description: str, counters: list[tuple[str, str, str, dict[str, Any]]], y_title: str
    ) -> dict[str, Any]:
        """`counters`: (key, field, label, format); each plotted as the per-second rate of its counter."""
        object_id = p + name
        helpers = [(f"max-{key}", metric("max", field, f"Max of {field}", fmt)) for key, field, _, fmt in counters]
        rates = [(key, counter_rate(stable_id(object_id, f"max-{key}"), label, fmt)) for key, _, label, fmt in counters]
        return time_series(
            object_id,
            title,
            description,
            rates,
            y_title=y_title,
            # A counter belongs to one agent's interface: split by the pair, or the max of the same
            # ifIndex on several agents would take turns between their counters.
            split=terms(
                "observer.ip",
                "Agent › ifIndex",
                stable_id(object_id, f"max-{counters[0][0]}"),
                size=10,
                data_type="ip",
                secondary=["sflow.if_index"],
            ),
            helpers=helpers,
            query=q,
        )

    objects = [
        per_interface(
            "in-octets",
            "Interface input (bytes/s)",
            "ifInOctets rate per agent and interface (top 10)",
            [("in", "sflow.if_in_octets", "In bytes/s", BYTES)],
            "Bytes/s",
        ),
        per_interface(
            "out-octets",
            "Interface output (bytes/s)",
            "ifOutOctets rate per agent and interface (top 10)",
            [("out", "sflow.if_out_octets", "Out bytes/s", BYTES)],
            "Bytes/s",
        ),
        per_interface(
            "errors",
            "Interface errors (errors/s)",
            "ifInErrors and ifOutErrors rates per agent and interface",
            [
                ("in-errors", "sflow.if_in_errors", "In errors/s", ERRORS),
                ("out-errors", "sflow.if_out_errors", "Out errors/s", ERRORS),
            ],
            "Errors/s",
        ),
        per_interface(
            "discards",
            "Interface discards (discards/s)",
            "ifInDiscards and ifOutDiscards rates per agent and interface",
            [
                ("in-discards", "sflow.if_in_discards", "In discards/s", DISCARDS),
                ("out-discards", "sflow.if_out_discards", "Out discards/s", DISCARDS),
            ],
            "Discards/s",
        ),
        table(
            p + "interfaces",
            "Interfaces",
            "Each agent's interfaces: speed, status and counters since boot",
            [
                ("agent", rows_by("observer.ip", "Agent", size=20, data_type="ip")),
                ("ifindex", rows_by("sflow.if_index", "ifIndex", size=50, data_type="number")),
                ("status", rows_by("sflow.if_oper_status", "Oper status", size=1, other=False)),
            ],
            [
                ("speed", metric("max", "sflow.if_speed", "Speed", BITS_PER_S)),
                ("in", metric("max", "sflow.if_in_octets", "In (counter)", BYTES)),
                ("out", metric("max", "sflow.if_out_octets", "Out (counter)", BYTES)),
                ("in-errors", metric("max", "sflow.if_in_errors", "In errors (counter)", ERRORS)),
                ("out-errors", metric("max", "sflow.if_out_errors", "Out errors (counter)", ERRORS)),
                ("in-discards", metric("max", "sflow.if_in_discards", "In discards (counter)", DISCARDS)),
                ("out-discards", metric("max", "sflow.if_out_discards", "Out discards (counter)", DISCARDS)),
            ],
            order_by="in",
            query=q,
        ),
    ]
    objects += [
        time_series(
            p + "drops-by-reason",
            "Dropped packets by reason (notifications/s)",
            "sFlow discarded-packet notifications per second, by the reason the switch gave (top 10)",
            [("drops", count("Notifications/s", DROPS, per_second=True))],
            y_title="Notifications/s",
            split=terms("event.reason", "Reason", stable_id(p + "drops-by-reason", "drops"), size=10),
            series="bar_stacked",
            query=DROPS_QUERY,
        ),
        table(
            p + "drops-where",
            "Where packets are dropped",
            "Discarded-packet notifications per agent, input interface and reason, and the drops the"
            " agent's rate limit left unnotified",
            [
                ("agent", rows_by("observer.ip", "Agent", size=20, data_type="ip")),
                (
                    "ifindex",
                    rows_by(
                        "observer.ingress.interface.id", "Input ifIndex", size=20, data_type="number", missing=True
                    ),
                ),
                ("reason", rows_by("event.reason", "Reason", size=10, missing=True)),
            ],
            [
                ("drops", count("Notifications", DROPS)),
                ("lost", metric("sum", "sflow.drops", "Not notified (rate limit)", DROPS)),
            ],
            query=DROPS_QUERY,
        ),
    ]
    sizes = [(24, 12)] * 4 + [(48, 14)] + [(24, 12)] * 2
    return objects, dashboard(
        "flowd-dashboard-sflow-counters",
        "[flowd] sFlow counters and drops",
        "Interface utilisation, errors and discards over time from sFlow counter samples; where and"
        " why the switches dropped packets, from their discarded-packet notifications.",
        list(zip(objects, *zip(*sizes, strict=True), strict=True)),
    )


def saved_objects() -> list[dict[str, Any]]:
    """Every object, dependencies before the objects that reference them."""
    objects: list[dict[str, Any]] = [data_view()]
    dashboards = []
    for build in (overview, top_n, geo, autonomous_systems, exporters_interfaces, flow_records, sflow_counters):
        parts, board = build()
        objects += parts
        dashboards.append(board)
    return objects + dashboards


def render() -> str:
    return "".join(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n" for item in saved_objects())


def main() -> int:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT} ({len(saved_objects())} objects)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""zone-maintenance scheduler plugin (Python, componentize-py).

Behaviour: see ../README.md. componentize-py generates the `wit_world` package
from the WIT; the exported interface `scheduler` is implemented by a class named
`Scheduler` in this module, and a `result<_, plugin-error>` error is returned by
raising `Err(PluginError_...(message))`.
"""

import json
from typing import Dict, List, Optional, Tuple

from wit_world import exports
from wit_world.exports.scheduler import (
    FilterResult,
    Node,
    NodeFields,
    Phases,
    PlacedPod,
    PluginInfo,
    Pod,
    PodFields,
    Reason,
)
from wit_world.imports.types import PluginError_InvalidConfig, PluginError_InvalidInput
from componentize_py_types import Err

MAINTENANCE_REASON = "node(s) under maintenance"
ZONE_LABEL = "topology.kubernetes.io/zone"

# Module-level state: one component instance is one plugin instance.
_preferred_zones: List[str] = []
# node id -> (under maintenance, zone rank or None)
_nodes: Dict[int, Tuple[bool, Optional[int]]] = {}


def _reject_duplicate_keys(pairs):
    """object_pairs_hook: a key given twice is an error, not "last one wins"."""
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate field `{key}`")
        obj[key] = value
    return obj


def _is_scalar_value_string(s: str) -> bool:
    """json.loads accepts lone surrogate escapes (\\ud800); they are not valid text."""
    return not any(0xD800 <= ord(c) <= 0xDFFF for c in s)


def _nested_deeper_than(text: str, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than `limit`.

    The only valid shape nests 2 deep ({"preferredZones": [...]}). Refusing
    deeper input up front keeps json.loads' recursion from overflowing the
    Wasm stack before Python's own recursion limit would catch it.
    """
    depth, in_string, escaped = 0, False, False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > limit:
                return True
        elif c in "]}":
            depth -= 1
    return False


def _parse_config(config: str) -> List[str]:
    if _nested_deeper_than(config, 2):
        raise Err(PluginError_InvalidConfig("config nests deeper than `{\"preferredZones\": [...]}`"))
    try:
        doc = json.loads(config, object_pairs_hook=_reject_duplicate_keys)
    except (ValueError, RecursionError) as e:
        raise Err(PluginError_InvalidConfig(f"config is not valid JSON: {e}"))
    if not isinstance(doc, dict):
        raise Err(PluginError_InvalidConfig("config must be a JSON object"))
    for key in doc:
        if key != "preferredZones":
            raise Err(PluginError_InvalidConfig(f"unknown field `{key}`, expected `preferredZones`"))
    zones = doc.get("preferredZones", [])
    if not isinstance(zones, list) or not all(
        isinstance(z, str) and _is_scalar_value_string(z) for z in zones
    ):
        raise Err(PluginError_InvalidConfig("`preferredZones` must be a list of strings"))
    return zones


def _label_value(labels, key: str) -> Optional[str]:
    """The value of the first label with `key`, as the Rust SDK's `label_value`."""
    return next((l.value for l in labels if l.key == key), None)


def _lookup(id: int) -> Tuple[bool, Optional[int]]:
    try:
        return _nodes[id]
    except KeyError:
        raise Err(PluginError_InvalidInput(f"unknown node id {id}"))


class Scheduler(exports.Scheduler):
    def info(self) -> PluginInfo:
        # Verdicts and scores depend on nodes only: the host sends no pods, and
        # `prepare` no part of the pod being scheduled.
        return PluginInfo(
            name="ZoneMaintenance",
            version="0.4.0",
            phases=Phases.FILTER | Phases.SCORE,
            tracks_pods=False,
            pod_fields=PodFields(0),
            # Of a node it reads the labels only.
            node_fields=NodeFields.LABELS,
        )

    def configure(self, config: str) -> None:
        global _preferred_zones
        _preferred_zones = _parse_config(config)

    def upsert_node(self, id: int, node: Node) -> None:
        labels = node.labels or []  # None for a node without labels
        maintenance = _label_value(labels, "maintenance") == "true"
        rank = None
        zone = _label_value(labels, ZONE_LABEL)
        if zone is not None and zone in _preferred_zones:
            rank = _preferred_zones.index(zone)  # first match
        _nodes[id] = (maintenance, rank)

    def remove_node(self, id: int) -> None:
        _nodes.pop(id, None)

    # Never called (the plugin tracks no pods), but part of the interface.
    def assume_pod(self, node: int, pod: PlacedPod) -> None:
        pass

    def forget_pod(self, node: int, uid: str) -> None:
        pass

    def prepare(self, p: Pod) -> Phases:
        # The pod does not change the answers: both phases apply to every pod.
        return Phases.FILTER | Phases.SCORE

    def filter(self, candidates: List[int], max_feasible: int) -> FilterResult:
        feasible: List[int] = []
        rejected: List[int] = []
        reasons: List[Reason] = []
        for id in candidates:
            maintenance, _ = _lookup(id)
            if maintenance:
                # The only reason this plugin gives: added once, always index 0.
                if not reasons:
                    reasons.append(Reason(message=MAINTENANCE_REASON, unresolvable=True))
                rejected.append(id)
            else:
                feasible.append(id)
                if max_feasible > 0 and len(feasible) == max_feasible:
                    break
        # Every refused node's reason is index 0.
        return FilterResult(
            feasible=feasible,
            rejected=rejected,
            rejected_reasons=bytes(len(rejected)),
            reasons=reasons,
        )

    def score(self, candidates: List[int]) -> bytes:
        n = len(_preferred_zones)
        scores = bytearray()
        for id in candidates:
            _, rank = _lookup(id)
            scores.append(0 if rank is None else 100 - (rank * 100) // n)
        return bytes(scores)

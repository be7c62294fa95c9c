"""The placement plan: where quantizers go. Plain, immutable data that prints, compares and round-trips through
JSON; a stage that changes a quantizer makes a new plan (`dataclasses.replace`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from types import MappingProxyType

from ovptq.graph.graph import Port


@dataclass(frozen=True)
class ActivationQuantizer:
    """A FakeQuantize on output `port` of `producer`, read by `consumers` (every consumer when `whole`)."""

    name: str
    producer: str
    port: int
    consumers: tuple[Port, ...]
    whole: bool
    per_channel: bool = False   # one range per channel (axis 1); only for inputs of depthwise convolutions
    symmetric: bool = True
    group: int | None = None    # quantizers of one group share one range (Concat inputs)
    zero_point_free: bool = False  # a consumer runs int8 only without a zero point: symmetric, whatever the range


@dataclass(frozen=True)
class WeightQuantizer:
    """Int8 weights of input `port` of `node`, one symmetric range per output channel (`channel_axes`)."""

    node: str
    port: int
    channel_axes: tuple[int, ...]
    half_range: bool = False    # the overflow fix: 7-bit weights
    embedding: bool = False     # a Gather's table, one range per row (weight-only: the lookup stays float)


@dataclass(frozen=True)
class QuantizationPlan:
    activations: tuple[ActivationQuantizer, ...] = ()
    weights: tuple[WeightQuantizer, ...] = ()
    ignored: dict[str, str] = field(default_factory=dict)  # node -> why it stays float
    float_rules: dict[str, str] = field(default_factory=dict)  # node -> the transformer rule keeping its inputs float
    # The quantizers (activation names, weighted layers) that the transformer rules would keep float where they do
    # not apply (model_type is not "transformer"): the safety net tries them as one unit.
    rule_float_activations: tuple[str, ...] = ()
    rule_float_weights: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "activations", tuple(self.activations))
        object.__setattr__(self, "weights", tuple(self.weights))
        object.__setattr__(self, "rule_float_activations", tuple(self.rule_float_activations))
        object.__setattr__(self, "rule_float_weights", tuple(self.rule_float_weights))
        object.__setattr__(self, "ignored", MappingProxyType(dict(self.ignored)))
        object.__setattr__(self, "float_rules", MappingProxyType(dict(self.float_rules)))

    def __bool__(self) -> bool:
        return bool(self.activations or self.weights)

    def __str__(self) -> str:
        lines = [f"QuantizationPlan: {len(self.activations)} activation and {len(self.weights)} weight quantizers"]
        for q in self.activations:
            where = "all consumers" if q.whole else ", ".join(f"{c.node}:{c.port}" for c in q.consumers)
            mode = ("per-channel " if q.per_channel else "") + ("symmetric" if q.symmetric else "asymmetric")
            group = f" group {q.group}" if q.group is not None else ""
            lines.append(f"  act  {q.producer}:{q.port} -> {where} [{mode}{group}]")
        for w in self.weights:
            notes = (" half-range" if w.half_range else "") + (" embedding" if w.embedding else "")
            lines.append(f"  wgt  {w.node}:{w.port} axes {list(w.channel_axes)}{notes}")
        for node, reason in {**self.ignored, **self.float_rules}.items():
            lines.append(f"  float {node}: {reason}")
        if self.rule_float_activations or self.rule_float_weights:
            lines.append(f"  the transformer rules would keep {len(self.rule_float_activations)} activation and "
                         f"{len(self.rule_float_weights)} weight quantizers float")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"activations": [asdict(q) for q in self.activations],
                           "weights": [asdict(w) for w in self.weights], "ignored": dict(self.ignored),
                           "float_rules": dict(self.float_rules),
                           "rule_float_activations": list(self.rule_float_activations),
                           "rule_float_weights": list(self.rule_float_weights)}, indent=1)

    @staticmethod
    def from_json(text: str) -> "QuantizationPlan":
        data = json.loads(text)
        activations = [ActivationQuantizer(**{**a, "consumers": tuple(Port(**c) for c in a["consumers"])})
                       for a in data["activations"]]
        weights = [WeightQuantizer(**{**w, "channel_axes": tuple(w["channel_axes"])}) for w in data["weights"]]
        return QuantizationPlan(activations, weights, dict(data["ignored"]), dict(data.get("float_rules", {})),
                                tuple(data.get("rule_float_activations", ())), tuple(data.get("rule_float_weights", ())))

    def summary(self) -> dict[str, object]:
        """What tests most often compare: {tensor: consumers}, and the weighted nodes."""
        return {"activations": {f"{q.producer}:{q.port}": sorted(f"{c.node}:{c.port}" for c in q.consumers)
                                for q in self.activations},
                "weights": sorted(w.node for w in self.weights)}

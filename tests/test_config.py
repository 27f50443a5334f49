"""The one typed-config loader: YAML values and key=value text against dataclass type hints."""

from dataclasses import dataclass, field

import pytest

from polyalign.core.config import apply_overrides, build, read_mapping
from polyalign.core.errors import PolyalignError


@dataclass
class Inner:
    name: str
    weight: float = 1.0


@dataclass
class Outer:
    steps: int = 1
    rate: float = 0.5
    flag: bool = False
    limit: int | None = 3
    layers: list[int | str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    parts: list[Inner] = field(default_factory=list)


def test_text_values_become_their_declared_types():
    raw = apply_overrides(
        {"parts": [{"name": "a"}]},
        [
            "steps=1e3",
            "rate=1e-3",
            "flag=yes",
            "limit=none",
            "layers=[2, last]",
            "modules=q_proj,v_proj",
            "parts.0.weight=2",
        ],
    )
    cfg = build(Outer, raw, "cfg")
    assert (cfg.steps, cfg.rate, cfg.flag, cfg.limit) == (1000, 1e-3, True, None)
    assert cfg.layers == [2, "last"] and cfg.modules == ["q_proj", "v_proj"]
    assert cfg.parts == [Inner("a", 2.0)] and isinstance(cfg.parts[0].weight, float)


@pytest.mark.parametrize(
    "raw,message",
    [
        ({"steps": 1.5}, "cfg.steps: 1.5 is not a valid int"),
        ({"flag": "maybe"}, "is not a valid bool"),
        ({"steps": True}, "not a valid int"),
        ({"stpes": 2}, r"unknown key\(s\) stpes"),
        ({"parts": [{"weight": 2}]}, r"cfg.parts\[0\]: missing required key\(s\) name"),
        ({"modules": 3}, "expected a list"),
        ({"parts": [{"name": 5}]}, "5 is not a valid str"),
    ],
)
def test_bad_values_name_where_they_are(raw, message):
    with pytest.raises(PolyalignError, match=message):
        build(Outer, raw, "cfg")


def test_bad_overrides_and_files(tmp_path):
    assert apply_overrides({}, ["a.b=1"]) == {"a": {"b": 1}}
    for raw, item, message in [
        ({}, "steps", "not key=value"),
        ({"parts": [{"name": "a"}]}, "parts.3.name=x", "not an index of a 1-item list"),
        ({"parts": ["a"]}, "parts.0.x=1", "holds no keys"),
    ]:
        with pytest.raises(PolyalignError, match=message):
            apply_overrides(raw, [item])
    with pytest.raises(PolyalignError, match="is not a valid int"):  # a key below a number
        build(Outer, apply_overrides({"steps": 1}, ["steps.x=1"]), "cfg")
    path = tmp_path / "c.yaml"
    path.write_text("- a list\n")
    with pytest.raises(PolyalignError, match="must be a mapping"):
        read_mapping(path, "config")
    path.write_text("a: [unclosed\n")
    with pytest.raises(PolyalignError, match="malformed YAML"):
        read_mapping(path, "config")
    path.write_text("")
    assert read_mapping(path, "config") == {}

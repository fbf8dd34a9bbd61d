"""The component vocabulary: names, JSON, backend names, flat site indices, shape checks."""
from __future__ import annotations

import json

import pytest

from loctest import Component, ComponentSet, ModelShape
from loctest.errors import UserError

SHAPE = ModelShape(n_layers=2, n_heads=4, d_head=16, d_mlp=128, d_model=64)


@pytest.mark.parametrize("name, parts", [
    ("mlp:3:17", ("mlp", 3, 17, None)),
    ("head:5:2", ("head", 5, 2, None)),
    ("attn:5:2:7", ("attn", 5, 2, 7)),
    ("resid:4", ("resid", 4, 0, None)),
])
def test_parse_and_format_round_trip(name, parts):
    component = Component.parse(name)
    assert (component.kind, component.layer, component.index, component.dim) == parts
    assert component.name == str(component) == name
    assert Component.parse(f"  {name} ") == component


@pytest.mark.parametrize("name", ["mlp:1", "mlp:1:2:3", "head:1", "head:1:2:3", "attn:1:2", "neuron:1:2",
                                  "mlp:-1:2", "mlp:a:b", "MLP:1:2", "mlp 1 2", "",
                                  "resid", "resid:1:0", "resid:1:2:3"])
def test_bad_names_are_user_errors(name):
    with pytest.raises(UserError, match="bad component name.*expected 'mlp:LAYER:NEURON'.*'resid:LAYER'"):
        Component.parse(name)


@pytest.mark.parametrize("args", [("attn", 1, 2), ("mlp", 1, 2, 3), ("head", 0, 1, 0), ("mlp", -1, 0), ("neuron", 0, 0),
                                  ("resid", 1, 3), ("resid", 1, 0, 2)])
def test_bad_components_are_user_errors(args):
    with pytest.raises(UserError):
        Component(*args)


def test_component_set_keeps_first_order_without_duplicates():
    components = ComponentSet(["mlp:1:2", "mlp:0:1", Component("mlp", 1, 2), "head:0:3"])
    assert components.names() == ["mlp:1:2", "mlp:0:1", "head:0:3"]
    assert len(components) == 3
    assert components == ComponentSet(["head:0:3", "mlp:0:1", "mlp:1:2"])
    assert components != ComponentSet(["mlp:1:2"])


def test_json_round_trip_with_backend_site_names(tmp_path):
    components = ComponentSet(["mlp:1:2", "head:0:3", "attn:1:2:5"])
    path = tmp_path / "arm.json"
    components.save(path, {"some-backend": lambda site: f"{site[0]}-site-{site[1]}"})
    data = json.loads(path.read_text())
    assert data == [
        {"name": "mlp:1:2", "kind": "mlp", "layer": 1, "index": 2, "dim": None, "some-backend": "mlp-site-1"},
        {"name": "head:0:3", "kind": "head", "layer": 0, "index": 3, "dim": None, "some-backend": "attn-site-0"},
        {"name": "attn:1:2:5", "kind": "attn", "layer": 1, "index": 2, "dim": 5, "some-backend": "attn-site-1"},
    ]
    loaded = ComponentSet.load(path)
    assert loaded.names() == components.names()
    assert ComponentSet.from_json(["mlp:1:2", {"name": "head:0:3"}]).names() == ["mlp:1:2", "head:0:3"]


def test_sites_group_heads_and_attention_neurons_together():
    components = ComponentSet(["head:1:2", "mlp:0:5", "attn:1:0:3"])
    assert {c.name: c.site for c in components} == {"head:1:2": ("attn", 1), "mlp:0:5": ("mlp", 0), "attn:1:0:3": ("attn", 1)}
    assert components.by_site() == {("attn", 1): [Component.parse("head:1:2"), Component.parse("attn:1:0:3")],
                                    ("mlp", 0): [Component.parse("mlp:0:5")]}


def test_site_indices_flatten_heads_as_head_times_d_head_plus_dim():
    components = ComponentSet(["head:1:2", "attn:1:0:3", "mlp:0:5", "mlp:0:2", "attn:1:2:4"])
    assert components.site_indices(SHAPE) == {
        ("attn", 1): [3, *range(32, 48)],  # attn:1:2:4 (column 36) lies inside head 2 and is not repeated
        ("mlp", 0): [2, 5],
    }
    assert ComponentSet(["attn:0:3:15"]).site_indices(SHAPE) == {("attn", 0): [63]}
    assert ComponentSet(["resid:1"]).site_indices(SHAPE) == {("resid", 1): list(range(64))}
    assert SHAPE.site_width("mlp") == 128 and SHAPE.site_width("attn") == 64 and SHAPE.site_width("resid") == 64


def test_counts_by_layer():
    components = ComponentSet(["mlp:0:1", "mlp:0:2", "mlp:1:0", "head:1:1", "attn:1:1:1"])
    assert components.counts_by_layer() == {("attn", 1): 1, ("head", 1): 1, ("mlp", 0): 2, ("mlp", 1): 1}


@pytest.mark.parametrize("name", ["mlp:1:127", "head:1:3", "attn:1:3:15", "mlp:0:0", "resid:1"])
def test_shape_accepts_the_last_valid_index(name):
    SHAPE.check(Component.parse(name))


@pytest.mark.parametrize("name, message", [
    ("mlp:2:0", r"layer 2 out of range \(model has 2 layers\)"),
    ("mlp:0:128", r"index out of range \(model has 128 neurons per layer\)"),
    ("head:0:4", r"index out of range \(model has 4 heads per layer\)"),
    ("attn:0:4:0", r"index out of range \(model has 4 heads per layer\)"),
    ("attn:0:0:16", r"dim out of range \(head size is 16\)"),
    ("resid:2", r"layer 2 out of range \(model has 2 layers\)"),
])
def test_shape_rejects_components_outside_the_model(name, message):
    with pytest.raises(UserError, match=f"component {name}: {message}"):
        SHAPE.check(Component.parse(name))
    with pytest.raises(UserError, match=message):
        ComponentSet(["mlp:0:0", name]).site_indices(SHAPE)
    with pytest.raises(UserError, match=message):
        SHAPE.checked(ComponentSet([name]))

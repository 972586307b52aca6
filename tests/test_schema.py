"""Reading the project's own JSON back: types, missing fields, non-finite numbers, depth and size, each one line
naming the file and the field."""

import json
from dataclasses import dataclass

import pytest

from common import schema
from common.schema import ANY, NAME, Choice, Fields, Map, Rule, count

SPEC = Fields(
    {
        "entries": [NAME],
        "demo": bool,
        "fold": (count(1, 5), None),
        "corpus": Fields({"listing": str}),
        "scores": Map((float, None), keys=("a", "b")),
    },
    {"kind": Choice("run"), "extra": ANY},
)
GOOD = {"entries": ["model", "metrics.json"], "demo": False, "fold": None, "corpus": {"listing": "x"}, "scores": {}}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"entries": [None, 1]}, "entries[0]: null, expected a file name inside the folder"),
        ({"entries": "model"}, 'entries: "model", expected a list of a file name inside the folder'),
        ({"entries": ["../x"]}, 'entries[0]: "../x", expected a file name inside the folder'),
        ({"entries": ["."]}, 'entries[0]: ".", expected a file name inside the folder'),
        ({"demo": "false"}, 'demo: "false", expected true or false'),
        ({"demo": 0}, "demo: 0, expected true or false"),
        ({"fold": 6}, "fold: 6, expected an integer 1..5 or null"),
        ({"fold": True}, "fold: true, expected an integer 1..5 or null"),
        ({"fold": 1.0}, "fold: 1.0, expected an integer 1..5 or null"),
        ({"corpus": {}}, "corpus.listing: missing"),
        ({"corpus": []}, "corpus: [], expected an object"),
        ({"scores": {"c": 1}}, "scores.c: not one of a, b"),
        ({"scores": {"a": "1"}}, 'scores.a: "1", expected a number or null'),
        ({"scores": {"a": False}}, "scores.a: false, expected a number or null"),
        ({"kind": "fold_set"}, 'kind: "fold_set", expected one of "run"'),
    ],
)
def test_a_field_of_the_wrong_type_is_named_with_what_was_expected(change, problem):
    with pytest.raises(schema.Invalid) as caught:
        schema.parse(json.dumps(GOOD | change), SPEC)
    assert str(caught.value) == problem


def test_a_document_matching_its_spec_is_returned_as_parsed():
    doc = GOOD | {"fold": 3, "scores": {"a": 0.5, "b": None}, "kind": "run", "extra": {"any": [1, "x"]}}
    assert schema.parse(json.dumps(doc), SPEC) == doc
    assert schema.parse(json.dumps(GOOD | {"unchecked": 1}), SPEC)["unchecked"] == 1  # others are kept


def test_a_missing_field_is_named():
    doc = dict(GOOD)
    del doc["demo"]
    with pytest.raises(schema.Invalid, match=r"^demo: missing$"):
        schema.parse(json.dumps(doc), SPEC)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"x": Infinity}', "Infinity is not a number this project writes"),
        ('{"x": -Infinity}', "-Infinity is not a number this project writes"),
        ('{"x": NaN}', "NaN is not a number this project writes"),
        ('{"x": 1e400}', "the number 1e400 is beyond the range of a double"),
        ("[" * 5000 + "]" * 5000, "nested more than 24 levels deep"),
        ("[" * 25 + "]" * 25, "nested more than 24 levels deep"),
    ],
)
def test_non_finite_numbers_and_deep_nesting_are_refused(text, problem):
    with pytest.raises(ValueError) as caught:
        schema.parse(text)
    assert str(caught.value) == problem


def test_nesting_up_to_the_limit_is_read():
    deepest = []
    for _ in range(23):
        deepest = [deepest]
    assert schema.parse("[" * 24 + "]" * 24) == deepest


def test_a_file_is_refused_in_one_line_naming_it(tmp_path):
    path = tmp_path / "kemdy_run.json"
    cases = [
        (b'{"entries": ', "not JSON: Expecting value at line 1 column 13"),
        ('{"a": "\ud55c"}'.encode("utf-16"), "not UTF-8 text: invalid start byte at byte 0"),
        (json.dumps(GOOD | {"demo": "false"}).encode(), 'demo: "false", expected true or false'),
        (b"{" + b" " * 2000 + b"}", "2002 bytes, more than the 1000 this file may hold"),
    ]
    for raw, problem in cases:
        path.write_bytes(raw)
        with pytest.raises(schema.DamagedFile) as caught:
            schema.load(path, SPEC, max_bytes=1000)
        assert str(caught.value) == f"{path}: damaged ({problem})" and "\n" not in str(caught.value)
    with pytest.raises(schema.DamagedFile, match=r"nothing.json: damaged \(No such file or directory\)"):
        schema.load(tmp_path / "nothing.json")


@dataclass
class Config:
    modality: str
    fusion: str | None
    dropout: float = 0.1
    pad_to: int = 0
    clip_norm: bool = False


def test_a_dataclass_spec_requires_its_fields_without_defaults_and_refuses_unknown_ones():
    spec = schema.of_dataclass(Config)
    assert schema.parse('{"modality": "text", "fusion": null}', spec) == {"modality": "text", "fusion": None}
    for text, problem in (
        ('{"modality": "text"}', "fusion: missing"),
        ('{"modality": "text", "fusion": null, "pad_to": 1.5}', "pad_to: 1.5, expected an integer"),
        ('{"modality": "text", "fusion": null, "clip_norm": 1}', "clip_norm: 1, expected true or false"),
        ('{"modality": "text", "fusion": null, "new": 1}', "new: a field this version does not know"),
    ):
        with pytest.raises(schema.Invalid, match=rf"^{problem}"):
            schema.parse(text, spec)


def test_a_rule_says_what_it_expects():
    even = Rule(int, lambda n: n % 2 == 0, "an even integer")
    assert schema.parse("4", even) == 4
    with pytest.raises(schema.Invalid, match=r"^the document: 3, expected an even integer$"):
        schema.parse("3", even)

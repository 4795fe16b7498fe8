"""The JSON Schema subset that tool arguments are checked against: each rule at its boundary."""

from __future__ import annotations

from typing import Any

import pytest

from flashspark.gates.tool_schema import schema_errors
from flashspark.gates.tools import WEATHER_PARAMETERS

NUMBERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "count": {"type": "integer", "minimum": 1, "maximum": 10},
        "ratio": {"type": "number"},
        "flag": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "maybe": {"type": ["string", "null"]},
    },
}


def test_a_matching_object_has_no_errors() -> None:
    assert schema_errors({"city": "Paris"}, WEATHER_PARAMETERS) == []
    assert schema_errors({"city": "Paris", "unit": "fahrenheit"}, WEATHER_PARAMETERS) == []
    value = {"count": 1, "ratio": 0.5, "flag": False, "tags": ["a"], "maybe": None}
    assert schema_errors(value, NUMBERS) == []
    assert schema_errors({"count": 10, "ratio": 3, "maybe": "x"}, NUMBERS) == []


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("Paris", "$: expected object, got string"),
        ([], "$: expected object, got array"),
        ({}, "$: missing required 'city'"),
        ({"city": 7}, "$.city: expected string, got integer"),
        ({"city": "Paris", "unit": "kelvin"}, "$.unit: 'kelvin' is not one of ['celsius', 'fahrenheit']"),
        ({"city": "Paris", "country": "FR"}, "$: unexpected property 'country'"),
    ],
)
def test_each_way_of_breaking_the_weather_schema_is_named(value: Any, error: str) -> None:
    assert schema_errors(value, WEATHER_PARAMETERS) == [error]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({"count": 0}, "$.count: 0 < minimum 1"),
        ({"count": 11}, "$.count: 11 > maximum 10"),
        ({"count": 2.5}, "$.count: expected integer, got number"),
        ({"count": True}, "$.count: expected integer, got boolean"),
        ({"ratio": False}, "$.ratio: expected number, got boolean"),
        ({"ratio": "1"}, "$.ratio: expected number, got string"),
        ({"flag": 1}, "$.flag: expected boolean, got integer"),
        ({"tags": ["a", 2]}, "$.tags[1]: expected string, got integer"),
        ({"maybe": 3}, "$.maybe: expected string or null, got integer"),
    ],
)
def test_numbers_booleans_arrays_and_unions_at_their_boundaries(value: Any, error: str) -> None:
    assert schema_errors(value, NUMBERS) == [error]


def test_a_whole_number_written_as_a_float_is_an_integer_and_extra_properties_are_allowed_by_default() -> None:
    assert schema_errors({"count": 3.0, "other": 1}, NUMBERS) == []


def test_every_error_is_reported_not_only_the_first() -> None:
    errors = schema_errors({"unit": "kelvin", "x": 1}, WEATHER_PARAMETERS)
    assert errors == [
        "$: missing required 'city'",
        "$.unit: 'kelvin' is not one of ['celsius', 'fahrenheit']",
        "$: unexpected property 'x'",
    ]


def test_keywords_outside_the_subset_and_unknown_types_are_not_judged() -> None:
    assert schema_errors("anything", {"type": "date-time"}) == []
    assert schema_errors({"a": 1}, {"type": "object", "patternProperties": {"^b": {}}}) == []

"""The one KEY=VALUE parser: typed values, comma lists, one clear error, a lenient split."""

import pytest

from gradguard.errors import GradguardError
from gradguard.options import OptionError, parse_pair, parse_pairs, split_items, split_pair, typed


def test_values_are_typed():
    assert [typed(v) for v in ("3", "0.5", "1e7", "True", "false", "dct", "")] == [
        3,
        0.5,
        1e7,
        True,
        False,
        "dct",
        "",
    ]
    assert parse_pair(" bins = 256 ") == ("bins", 256)
    assert parse_pair("warmup.z=1e7", float) == ("warmup.z", 1e7)


def test_lists_and_repeated_flags():
    assert parse_pairs("a=1, b=x,,c=true ") == {"a": 1, "b": "x", "c": True}
    assert parse_pairs(["a=1,2", "b=3"]) == {"a": "1,2", "b": 3}  # a flag's value keeps commas
    assert parse_pairs("a=1,a=2") == {"a": 2}
    assert parse_pairs("") == {}


@pytest.mark.parametrize("item", ["x", "=3", " = ", "k=abc"])
def test_malformed_items_are_one_error(item):
    with pytest.raises(OptionError, match=r"expected detector.key=number, got") as e:
        parse_pairs([item], float, "detector.key=number")
    assert isinstance(e.value, GradguardError)
    if item != "k=abc":
        with pytest.raises(OptionError, match="expected KEY=VALUE"):
            parse_pair(item)


def test_the_lenient_split_never_raises():
    assert split_items(" a=1 ,, b ") == ["a=1", "b"]
    assert split_pair("b") == ("b", "")
    assert split_pair(" k = 2=3 ") == ("k", "2=3")

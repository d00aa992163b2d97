import pytest

from occbench.errors import ConfigError
from occbench.synth.scales import format_scale, parse_scales


def test_inclusive_range_with_float_step():
    assert parse_scales("1.0:0.5:5") == (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)
    # decimal arithmetic: no 0.30000000000000004, and stop is included
    assert parse_scales("0.1:0.1:0.3") == (0.1, 0.2, 0.3)
    assert parse_scales("1:0.3:2") == (1.0, 1.3, 1.6, 1.9)  # stop off the grid is not added
    assert parse_scales("2:1:2") == (2.0,)


def test_lists_and_numbers():
    assert parse_scales("1, 1.5,2") == (1.0, 1.5, 2.0)
    assert parse_scales("1.25") == (1.25,)
    assert parse_scales(2) == (2.0,)
    assert parse_scales([1, 1.5]) == (1.0, 1.5)


@pytest.mark.parametrize("spec, message", [
    ("0:1:2", "must be > 0"),
    ("1:0:2", "step must be > 0"),
    ("1:-0.5:2", "step must be > 0"),
    ("3:1:2", "greater than stop"),
    ("1:2", "start:step:stop"),
    ("1:a:2", "not a number"),
    ("1,x", "not a number"),
    ("-1", "must be > 0"),
    ("1,1.0", "listed twice"),
    ("inf", "finite"),
    ("", "empty"),
    ("1:1e-9:100", "at most"),
])
def test_invalid_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_scales(spec)


def test_format_scale_round_trips():
    for s in (1.0, 1.5, 0.1, 2.25, 1.0000001, 3.0):
        assert float(format_scale(s)) == s
    assert format_scale(1.0) == "1" and format_scale(1.5) == "1.5"

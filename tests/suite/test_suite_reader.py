"""Reading suite files: the bounds refuse what they must and let ordinary YAML through (anchors, merge keys, a
byte-order mark, dates), and a message stays short whatever the file holds."""

from __future__ import annotations

import time

import pytest
from suite_helpers import BASE, error_of, load_text, write

from attnbench.suite.errors import MAX_LINES, SHORT_LENGTH, SuiteError, shorten
from attnbench.suite.load import check_suite, load_suite
from attnbench.suite.reader import MAX_DEPTH, MAX_NODES, parse_yaml


def test_small_aliases_and_merge_keys_are_ordinary_yaml(tmp_path):
    text = BASE.replace("sweep: {T: 32, H: 4, d: 8}", "sweep: &shape {T: 32, H: 4, d: 8}") + (
        "timing: &quick {warmup_ms: 1, rep_ms: 2}\n"
        "devices:\n"
        "  cpu: {sweep: *shape, timing: {<<: *quick, rep_ms: 3}}\n"  # a merge key overrides without a duplicate
    )
    suite = load_text(tmp_path, text)
    assert (suite.timing.warmup_ms, suite.timing.rep_ms) == (1, 3)


def test_a_byte_order_mark_and_a_date_like_description_are_read_as_text(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + (BASE + "description: 2024-05-01\n").encode())
    assert load_suite(path, device="cpu").resolved["description"] == "2024-05-01"


def test_the_node_bound_counts_expanded_aliases():
    """Within the bound loads; three aliases more and the same file is refused at the first past it."""
    per_list = 1000
    anchor = "base: &v [" + ", ".join(["1"] * (per_list - 1)) + "]\n"
    copies = (MAX_NODES - per_list - 1) // (per_list + 2)
    fits = anchor + "".join(f"k{index}: *v\n" for index in range(copies))
    assert isinstance(parse_yaml(fits, "fits.yaml"), dict)
    over = fits + "".join(f"x{index}: *v\n" for index in range(3))
    with pytest.raises(SuiteError, match=rf"over\.yaml: x\d: more than {MAX_NODES} values once aliases"):
        parse_yaml(over, "over.yaml")


def nested(depth: int) -> str:
    """A mapping (level 1) holding lists nested to `depth` levels in all."""
    return "a: " + "[" * (depth - 1) + "]" * (depth - 1)


def test_the_depth_bound_is_exact():
    assert parse_yaml(nested(MAX_DEPTH), "ok.yaml")
    with pytest.raises(SuiteError, match=rf"deep\.yaml: a: nested more than {MAX_DEPTH} levels deep"):
        parse_yaml(nested(MAX_DEPTH + 1), "deep.yaml")


def test_a_duplicate_key_names_both_lines(tmp_path):
    text = BASE + "timing:\n  rep_ms: 5\n  warmup_ms: 1\n  rep_ms: 6\n"
    message = error_of(tmp_path, text)
    assert "suite.yaml: timing.rep_ms: duplicate key at line 11 (first given at line 9)" in message


def test_an_alias_bomb_in_a_set_value_is_refused_at_once(tmp_path):
    bomb = "[" + ", ".join(f"&a{level} [" + ", ".join([f"*a{level - 1}"] * 9) + "]" for level in range(1, 9))
    bomb = bomb.replace("*a0", "1") + "]"
    started = time.perf_counter()
    message = error_of(tmp_path, BASE, overrides=[f"description={bomb}"])
    assert time.perf_counter() - started < 5
    assert "--set: the value is not YAML" in message
    assert f"more than {MAX_NODES} values" in message


def test_a_huge_value_gives_a_short_message(tmp_path):
    message = error_of(tmp_path, BASE + "description: [" + "x" * 900_000 + "]\n")
    assert "description: not a string; got ['xxx" in message
    assert len(message) < 400


def test_shorten_bounds_every_kind_of_value():
    looped: list = [1]
    looped.append(looped)
    nested = [[["lol"] * 9] * 9] * 9
    for value in ["y" * 10**7, list(range(10**6)), {str(key): key for key in range(10**5)}, 10**4000, looped, nested]:
        assert len(shorten(value)) <= SHORT_LENGTH


def test_a_suite_with_many_mistakes_lists_the_first_and_counts_the_rest(tmp_path):
    wrong = 30
    message = error_of(tmp_path, BASE.replace("T: 32", "T: [" + ", ".join(["x"] * wrong) + "]"))
    lines = message.splitlines()
    assert len(lines) == MAX_LINES + 1
    assert lines[-1] == f"... and {wrong - MAX_LINES} more problems"
    with pytest.raises(SuiteError) as info:
        load_text(tmp_path, BASE.replace("T: 32", "T: [" + ", ".join(["x"] * wrong) + "]"))
    assert len(info.value.errors) == wrong


def test_check_suite_waits_for_every_device_only_when_none_is_chosen(tmp_path):
    """A suite that only the cuda settings break is refused for a cpu run (every device is checked), and with no
    device chosen it is refused too: it would fail on either."""
    path = write(tmp_path, BASE + "devices: {cuda: {timing: {max_reps: 0}}}\n")
    for device in ("cpu", "cuda", None):
        with pytest.raises(SuiteError, match=r"devices\.cuda\.timing\.max_reps: must be >= 1"):
            check_suite(path, device=device)


def test_check_suite_leaves_a_set_that_fits_one_device_to_load_suite(tmp_path):
    """`--set timing.min_reps=5` is wrong only where a device section caps max_reps below it: with no device
    chosen the schema stage lets it pass, and loading for that device refuses it."""
    path = write(tmp_path, BASE + "devices: {cpu: {timing: {min_reps: 2, max_reps: 3}}}\n")
    overrides = ["timing.min_reps=5"]
    checked = check_suite(path, overrides=overrides)
    assert load_suite(checked, device="cuda", overrides=overrides).timing.min_reps == 5
    with pytest.raises(SuiteError, match=r"timing\.min_reps \(from --set timing\.min_reps=5\): must be <= max_reps"):
        load_suite(checked, device="cpu", overrides=overrides)

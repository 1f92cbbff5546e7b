"""Constraints on the model profile (--navigator-constraints): parsing, judging, and the failure
message, given plain values (the profile, the peaks, the stored entries), not a session."""

from __future__ import annotations

import warnings

import pytest

from pytest_navigator.gate.constraints import Constraint, ConstraintError, check, constraint_failure, parse_constraints
from pytest_navigator.gate.entries import BaselineEntry
from pytest_navigator.model.profile import ModelProfile


def test_constraints_parse_percentages_numbers_and_suffixes() -> None:
    assert parse_constraints("flops=60%, params=5e6") == [
        Constraint("flops", 0.6, True),
        Constraint("params", 5e6, False),
    ]
    assert parse_constraints({"params": "2.5M", "flops": "1G"}) == [
        Constraint("params", 2.5e6, False),
        Constraint("flops", 1e9, False),
    ]
    assert parse_constraints(None) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "latency=5",
            "--navigator-constraints: unknown constraint 'latency'; accepted: flops (FLOPs per request), "
            "params (parameters), peak_rss (peak RSS).",
        ),
        ("flops=-5%", "--navigator-constraints: flops='-5%' is not a positive number or percentage; e.g. flops=60%"),
        ("params=lots", "--navigator-constraints: params='lots' is not a positive number or percentage"),
        ("flops", "--navigator-constraints='flops': 'flops' is not NAME=LIMIT, e.g. flops=60%,params=5e6."),
        (
            "peak_rss=lots",
            "--navigator-constraints: peak_rss='lots' is not a positive number or percentage; e.g. peak_rss=60% (of the baseline) or peak_rss=512MiB",
        ),
    ],
)
def test_a_bad_constraint_names_the_option_the_value_and_what_is_accepted(value: str, message: str) -> None:
    with pytest.raises(ConstraintError) as raised:
        parse_constraints(value)
    assert str(raised.value).startswith(message)


def test_a_violated_constraint_gives_old_and_new_figures_and_a_percentage_reads_the_baseline() -> None:
    found = ModelProfile(195, {1: 704, 2: 1408}, "torch.utils.flop_counter")
    stored = {1: {"parameters": 195, "flops": 704}, 2: {"parameters": 195, "flops": 1408}}
    checked = check(parse_constraints("flops=60%,params=150"), found, stored)
    assert [v.describe() for v in checked.violations] == [
        "FLOPs per request at batch size 1: 704 -> 704, above the limit 422 (flops=60%)",
        "FLOPs per request at batch size 2: 1.41k -> 1.41k, above the limit 845 (flops=60%)",
        "parameters: 195 -> 195, above the limit 150 (params=150)",
    ]
    assert check(parse_constraints("flops=100%,params=195"), found, stored).violations == []
    unjudged = check(parse_constraints("flops=60%"), found, {1: None, 2: None})
    assert unjudged.violations == [] and len(unjudged.unjudged) == 2
    assert "the baseline has no flops figure" in unjudged.unjudged[0]


FOUND = ModelProfile(195, {1: 704, 2: 1408}, "torch.utils.flop_counter")


def test_constraint_failure_reads_stored_entries_given_as_values() -> None:
    """The figures a percentage is of come in as the stored entries by batch size: their model
    figures and peak RSS; a batch size with no entry (None) is said as not judged."""
    stored = BaselineEntry(model={"parameters": 195, "flops": 704}, peak_memory={"rss_bytes": 2**20})
    with pytest.warns(UserWarning, match="flops=60% at batch size 2: the baseline has no flops figure$"):
        failure = constraint_failure(
            "r on m.pt2",
            parse_constraints("flops=60%,peak_rss=150%"),
            FOUND,
            {1: 2 * 2**20, 2: None},
            source="baselines/m.json",
            entries={1: stored},
        )
    assert failure.splitlines() == [
        "r on m.pt2 violates its constraints (against baselines/m.json):",
        "  FLOPs per request at batch size 1: 704 -> 704, above the limit 422 (flops=60%)",
        "  peak RSS at batch size 1: 1.0 MiB -> 2.0 MiB, above the limit 1.5 MiB (peak_rss=150%)",
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert constraint_failure("r on m.pt2", parse_constraints("flops=60%"), FOUND, {}, source="b.json") == ""
    assert [str(w.message) for w in caught] == [
        "r on m.pt2: constraints not judged (nothing to compare in b.json): flops=60% at batch size 1: the baseline "
        "has no flops figure; flops=60% at batch size 2: the baseline has no flops figure"
    ]
    required = constraint_failure(
        "r on m.pt2",
        parse_constraints("flops=60%"),
        FOUND,
        {},
        source="b.json",
        entries={1: None},
        require_baseline=True,
    )
    assert required.endswith("(--navigator-require-baseline); record a baseline with --update-baselines.")


def test_constraint_failure_in_an_ab_run_reads_the_old_models_profile() -> None:
    old = ModelProfile(100, {1: 352, 2: 704}, "torch.utils.flop_counter")
    failure = constraint_failure(
        "r on m.pt2", parse_constraints("params=150%"), FOUND, {}, source="the A/B model old.pt2", against=old
    )
    assert failure.splitlines() == [
        "r on m.pt2 violates its constraints (against the A/B model old.pt2):",
        "  parameters: 100 -> 195, above the limit 150 (params=150%)",
    ]


def test_constraint_failure_without_a_profile_says_why() -> None:
    failure = constraint_failure(
        "r on m.pt2", parse_constraints("params=5"), None, {}, source="b.json", profile_error="ValueError: no"
    )
    assert (
        failure
        == "r on m.pt2: the constraints cannot be checked: the model's profile could not be computed: ValueError: no"
    )

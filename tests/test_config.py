"""ProfilerConfig: Model Navigator's names and defaults, validation, and a lossless dict round trip."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_navigator import MeasurementMode, ProfilerConfig
from pytest_navigator.config import ProfilerConfigError


def test_defaults_are_model_navigators() -> None:
    config = ProfilerConfig()
    assert config.measurement_mode is MeasurementMode.COUNT_WINDOWS
    assert (config.measurement_interval, config.measurement_request_count) == (5000, 50)
    assert (config.stability_percentage, config.max_trials, config.throughput_cutoff_threshold) == (10.0, 10, 0.05)
    assert (config.min_trials, config.stabilization_windows, config.throughput_backoff_limit) == (3, 3, 2)
    assert config.run_profiling is True and config.batch_sizes is None


@pytest.mark.parametrize(
    ("settings", "field", "accepted"),
    [
        ({"measurement_interval": 0}, "measurement_interval=0", "milliseconds > 0"),
        ({"measurement_request_count": -5}, "measurement_request_count=-5", ">= 1"),
        ({"stability_percentage": 150}, "stability_percentage=150", "(0, 100]"),
        ({"max_trials": 2}, "max_trials=2", ">= min_trials (3)"),
        ({"stabilization_windows": 1}, "stabilization_windows=1", ">= 2"),
        (
            {"measurement_mode": "sometimes"},
            "measurement_mode='sometimes'",
            "'count_windows', 'time_windows' or 'instructions'",
        ),
        ({"batch_sizes": [1, 0]}, "batch_sizes=(1, 0)", "positive integers"),
        ({"throughput_cutoff_threshold": -2}, "throughput_cutoff_threshold=-2", ">= 0"),
    ],
)
def test_nonsense_values_are_rejected_by_name(settings: dict[str, object], field: str, accepted: str) -> None:
    with pytest.raises(ProfilerConfigError) as info:
        ProfilerConfig.from_dict(settings)
    assert f"ProfilerConfig.{field} is not accepted" in str(info.value)
    assert accepted in str(info.value)


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ProfilerConfigError, match="no setting 'stability'; settings: batch_sizes"):
        ProfilerConfig.from_dict({"stability": 5})


def test_missing_keys_take_the_field_defaults() -> None:
    assert ProfilerConfig.from_dict({}) == ProfilerConfig()


@given(
    mode=st.sampled_from(MeasurementMode),
    interval=st.floats(1, 1e5),
    count=st.integers(1, 10_000),
    stability=st.floats(0.5, 100),
    windows=st.integers(2, 6),
    extra=st.integers(0, 10),
    batch_sizes=st.none() | st.lists(st.integers(1, 4096) | st.none(), max_size=5),
)
def test_dict_round_trip_through_json(
    mode: MeasurementMode,
    interval: float,
    count: int,
    stability: float,
    windows: int,
    extra: int,
    batch_sizes: list[int | None] | None,
) -> None:
    config = ProfilerConfig(
        batch_sizes=None if batch_sizes is None else tuple(batch_sizes),
        measurement_mode=mode,
        measurement_interval=interval,
        measurement_request_count=count,
        stability_percentage=stability,
        stabilization_windows=windows,
        max_trials=max(windows, 3) + extra,  # at least min_trials (3) and the stabilization windows
    )
    assert ProfilerConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config

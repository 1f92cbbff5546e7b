"""The tests generated for each model file: one correctness and one performance test per runtime,
and the settings their `navigator` marker takes. Imports no ML library until a test runs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_navigator import options

if TYPE_CHECKING:
    from pytest_navigator.check.correctness import CorrectnessReport
    from pytest_navigator.measure.profiler import RuntimeProfile
    from pytest_navigator.model.loader import Model
    from pytest_navigator.runtimes.builds import RuntimePlan
    from pytest_navigator.session import NavigatorSession

SESSION_KEY: pytest.StashKey[NavigatorSession] = pytest.StashKey()


class ModelFile(pytest.File):
    """A model file as a collector: one test per runtime, with no test file written by the user."""

    def collect(self) -> Iterator[pytest.Item]:
        session = self.config.stash[SESSION_KEY]
        model = session.models[next(p for p in session.models if p.resolve() == self.path.resolve())]
        plans = session.builds.plan(model)
        kinds: list[type[NavigatorItem]] = [CorrectnessItem]
        if session.settings.profiler.run_profiling:
            kinds.append(PerformanceItem)
        for kind in kinds:  # every correctness test first: they build the runtimes the profiler reuses
            for plan in plans:
                item = kind.from_parent(self, name=f"{kind.test_name}[{plan.name}]", model=model, plan=plan)
                item.add_marker(pytest.mark.navigator)
                if plan.skip_reason:
                    item.add_marker(pytest.mark.skip(reason=f"{plan.name}: {plan.skip_reason}"))
                if kind is PerformanceItem and self.config.pluginmanager.hasplugin("xdist"):
                    # under --dist loadgroup, one worker measures a device: no two timings compete. With
                    # --navigator-devices each worker has its own GPU: CUDA measurements spread over the
                    # workers, and devices.device_lock makes workers that share a GPU take turns.
                    from pytest_navigator.plugin.devices import requested

                    if not (plan.definition.device.startswith("cuda") and requested(self.config)):
                        item.add_marker(pytest.mark.xdist_group(f"navigator-performance-{plan.definition.device}"))
                yield item


def _test_correctness(request: pytest.FixtureRequest, navigator_verify: Any, navigator_dataloader: Any) -> None:
    """The body of every generated test_correctness[<runtime>]: fixtures resolved by pytest, then the check."""
    item = request.node
    assert isinstance(item, CorrectnessItem)
    with _not_applicable_skips(item.navigator_runtime):
        run_check(item, item.navigator_model, item.navigator_runtime, navigator_verify, navigator_dataloader)


def _test_performance(request: pytest.FixtureRequest) -> None:
    """The body of every generated test_performance[<runtime>]: profile, keep the profile, fail when unstable."""
    item = request.node
    assert isinstance(item, PerformanceItem)
    with _not_applicable_skips(item.navigator_runtime):
        run_profile(item, item.navigator_model, item.navigator_runtime)


@contextlib.contextmanager
def _not_applicable_skips(runtime: str) -> Iterator[None]:
    """A runtime the model turned out not to take when it was built (RuntimeNotApplicable) is skipped."""
    from pytest_navigator.errors import RuntimeNotApplicable

    try:
        yield
    except RuntimeNotApplicable as exc:
        pytest.skip(f"{runtime}: {exc}")


class NavigatorItem(pytest.Function):
    """A generated test of one runtime of one model; a Function, so users' fixtures and markers apply."""

    test_name = ""
    body: Callable[..., None]

    def __init__(self, *, model: Model, plan: RuntimePlan, **kwargs: Any) -> None:
        super().__init__(callobj=type(self).body, **kwargs)
        self.navigator_model = model
        self.plan = plan

    @property
    def navigator_runtime(self) -> str:
        return self.plan.name

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str | Any:
        from pytest_navigator.check.correctness import CorrectnessFailure
        from pytest_navigator.errors import NavigatorError
        from pytest_navigator.measure.profiler import PerformanceFailure

        if isinstance(excinfo.value, (NavigatorError, CorrectnessFailure, PerformanceFailure)):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        # Skip reports need a line number; the domain is the bare name, or the reporter turns
        # the model file's dots into '::'.
        return self.path, 0, self.name


class CorrectnessItem(NavigatorItem):
    """Checks one runtime's outputs against the reference's (navigator_verify / navigator_dataloader apply)."""

    test_name = "test_correctness"
    body = staticmethod(_test_correctness)


class PerformanceItem(NavigatorItem):
    """Profiles one runtime: throughput and latency per batch size, kept for the summary and baselines."""

    test_name = "test_performance"
    body = staticmethod(_test_performance)


#: The navigator marker's settings (options.MARKER_SETTINGS) the profiler takes (as
#: settings.PROFILER_SETTINGS); the others are the correctness check's.
_PROFILE_SETTINGS = (
    "mode",
    "window",
    "stability",
    "max_trials",
    "time_budget",
    "interference",
    "profile",
    "batch_sizes",
    "thresholds",
    "constraints",
)
#: Marker settings the gate reads, not the profiler.
_GATE_SETTINGS = ("thresholds", "constraints")
_CHECK_SETTINGS = tuple(name for name in options.MARKER_SETTINGS if name not in _PROFILE_SETTINGS)


def _marker_settings(node: pytest.Item, overrides: dict[str, Any]) -> dict[str, Any]:
    """The navigator markers' settings (the closest marker wins) updated with non-None overrides."""
    from pytest_navigator.settings import OptionError

    settings: dict[str, Any] = {}
    for marker in reversed(list(node.iter_markers("navigator"))):
        settings.update(marker.kwargs)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(settings) - set(options.MARKER_SETTINGS))
    if unknown:
        raise OptionError(
            f"{node.nodeid}: the navigator marker has no setting {', '.join(map(repr, unknown))}; "
            f"it takes {', '.join(options.MARKER_SETTINGS)}."
        )
    return settings


def run_profile(node: pytest.Item, model: Model, runtime: str, **overrides: Any) -> RuntimeProfile:
    """Profile one runtime with the options, updated by the navigator marker and call arguments, and
    judge it (gate.decide): skip when profiling is off, fail or warn as the gate's outcome says."""
    from pytest_navigator.gate.constraints import parse_constraints
    from pytest_navigator.gate.policy import Outcome
    from pytest_navigator.gate.thresholds import parse_thresholds
    from pytest_navigator.measure.profiler import PerformanceFailure
    from pytest_navigator.settings import profiler_config

    session = node.config.stash[SESSION_KEY]
    settings = _marker_settings(node, overrides)
    chosen = {k: settings[k] for k in _PROFILE_SETTINGS if k in settings and k not in _GATE_SETTINGS}
    config = profiler_config(session.settings.profiler, f"{node.nodeid}: ", **chosen)
    if not config.run_profiling:
        pytest.skip(f"profiling is off ({options.NO_PROFILE} or navigator(profile=False))")
    limits = (
        parse_thresholds(settings["thresholds"], f"{node.nodeid}: thresholds")
        if "thresholds" in settings
        else session.limits
    )
    constraints = (
        parse_constraints(settings["constraints"], f"{node.nodeid}: constraints")
        if "constraints" in settings
        else session.constraints
    )
    from pytest_navigator.measure.instructions import CannotCount
    from pytest_navigator.plugin.devices import measurement_lock

    device = session.registry.get(runtime).device if runtime in session.registry else "cpu"
    with measurement_lock(node.config, device, session.settings.state_dir), _timeout(node, session, runtime, settings):
        try:
            profile, outcome, broken = session.check_performance(model, runtime, config, limits, constraints)
        except CannotCount as reason:
            pytest.skip(f"instruction counts: {reason}")
    import warnings

    if outcome.warning:
        warnings.warn(InconclusiveWarning(outcome.warning), stacklevel=1)
    if outcome.outcome == Outcome.FAIL:
        raise PerformanceFailure(outcome.message + (f"\n{broken}" if broken else ""))
    if broken:
        raise PerformanceFailure(broken)
    if outcome.outcome == Outcome.SKIP:
        pytest.skip(outcome.message)
    return profile


class InconclusiveWarning(UserWarning):
    """An unstable measurement under --navigator-inconclusive=warn: nothing was judged."""


def run_check(
    node: pytest.Item, model: Model, runtime: str, fixture_verify: Any, dataloader: Any, **overrides: Any
) -> CorrectnessReport:
    """One runtime's check with settings from, by precedence: call arguments, the navigator marker,
    the navigator_verify / navigator_dataloader fixtures, then options and ini."""
    from pytest_navigator.check.correctness import CheckOptions
    from pytest_navigator.check.user_samples import check_samples, samples_from_dataloader
    from pytest_navigator.settings import OptionError

    session = node.config.stash[SESSION_KEY]
    settings = _marker_settings(node, overrides)
    verify = settings.get("verify", fixture_verify)
    if verify is not None and not callable(verify):
        raise OptionError(
            f"{node.nodeid}: verify={verify!r} is not a VerifyFunction; give a callable (reference samples, runtime samples) -> bool, e.g. pytest_navigator.allclose(atol=1e-3)."
        )
    explicit = list(session.checking.user_samples(model, session.load_models))
    if dataloader is not None:
        explicit += check_samples(samples_from_dataloader(dataloader, model.io_spec), model.io_spec)
    examples = settings.get("examples", session.settings.examples)
    if not isinstance(examples, int) or examples < 0:
        raise OptionError(f"{node.nodeid}: examples={examples!r}; give a whole number >= 0.")
    check = CheckOptions(
        verify,
        examples,
        tuple(explicit),
        bool(settings.get("strict", session.settings.strict)),
        bool(settings.get("allow_nonfinite", session.settings.allow_nonfinite)),
        agreement=settings.get("agreement"),
    )
    with _timeout(node, session, runtime, settings):
        return session.check_correctness(model, runtime, check)


@contextlib.contextmanager
def _timeout(node: pytest.Item, session: Any, runtime: str, settings: dict[str, Any]) -> Iterator[None]:
    """The navigator marker's `timeout` (seconds per request to the runtime's worker) for this test only."""
    if settings.get("timeout") is None or session.settings.isolation != "process":
        yield
        return
    from pytest_navigator.settings import parse_timeout
    from pytest_navigator.workers.isolation import Timeouts

    seconds = parse_timeout(settings["timeout"], f"{node.nodeid}: navigator marker ")
    worker = session.builds.worker(runtime)
    saved, worker.timeouts = worker.timeouts, Timeouts(seconds)
    try:
        yield
    finally:
        worker.timeouts = saved

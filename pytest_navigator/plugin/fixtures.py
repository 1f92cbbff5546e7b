"""Fixtures for users' own tests: the run's session, each model and runtime, and the check and
profile of a runtime from a test of your own. Registered by the plugin (plugin.py imports them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from pytest_navigator import options
from pytest_navigator.plugin.items import SESSION_KEY, run_check, run_profile

if TYPE_CHECKING:
    from pytest_navigator.check.correctness import CorrectnessReport
    from pytest_navigator.config import SizedDataLoader, VerifyFunction
    from pytest_navigator.measure.profiler import RuntimeProfile
    from pytest_navigator.model.loader import Model
    from pytest_navigator.runtimes import Runner
    from pytest_navigator.session import NavigatorSession


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "navigator_model" not in metafunc.fixturenames:
        return
    session = metafunc.config.stash.get(SESSION_KEY, None)
    if session is None:
        return  # the fixtures skip with the reason
    models = list(session.models.values())
    metafunc.parametrize("navigator_model", models, indirect=True, ids=[m.name for m in models], scope="session")
    if "navigator_runner" in metafunc.fixturenames:
        overrides: dict[str, Any] = {}
        for marker in reversed(list(metafunc.definition.iter_markers("navigator"))):
            overrides.update(marker.kwargs.get("runtime_options") or {})
        from pytest_navigator.errors import NavigatorError

        where = f"{metafunc.definition.nodeid}: navigator marker runtime_options"
        try:
            for name, values in overrides.items():  # every marker entry is checked, not only the planned ones
                session.builds.runtime_id(name, values, where)
            names = list(
                dict.fromkeys(
                    session.builds.runtime_id(p.definition.name, overrides.get(p.definition.name), where)
                    for m in models
                    for p in session.builds.plan(m)
                )
            )
        except NavigatorError as exc:
            raise pytest.UsageError(str(exc)) from None
        metafunc.parametrize("navigator_runner", names, indirect=True, ids=names, scope="session")


@pytest.fixture(scope="session")
def navigator_session(pytestconfig: pytest.Config) -> NavigatorSession:
    """The run's NavigatorSession (models, runtimes, reference outputs)."""
    session = pytestconfig.stash.get(SESSION_KEY, None)
    if session is None:
        pytest.skip(f"no model given: run pytest with {options.MODEL}=PATH")
    return session


@pytest.fixture(scope="session")
def navigator_model(request: pytest.FixtureRequest, navigator_session: NavigatorSession) -> Model:
    """Each model given with --navigator-model (the test runs once per model)."""
    model: Model = request.param
    return model


@pytest.fixture(scope="session")
def navigator_runner(
    request: pytest.FixtureRequest, navigator_session: NavigatorSession, navigator_model: Model
) -> Runner:
    """Each runtime of the model, built once per run; skipped with the reason where it cannot run."""
    from pytest_navigator.errors import RuntimeBuildError, RuntimeNotApplicable

    plans = {p.definition.name: p for p in navigator_session.builds.plan(navigator_model)}
    plan = plans.get(navigator_session.registry.get(request.param).name)
    if plan is None:
        pytest.skip(f"{request.param} does not apply to {navigator_model.name}")
    if plan.skip_reason:
        pytest.skip(f"{request.param}: {plan.skip_reason}")
    try:
        return navigator_session.runner(navigator_model, request.param)
    except RuntimeNotApplicable as exc:
        pytest.skip(f"{request.param}: {exc}")
    except RuntimeBuildError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def navigator_verify() -> VerifyFunction | None:
    """Override to judge every runtime's outputs with your own VerifyFunction, e.g.
    `return pytest_navigator.topk_agreement(k=5)`. None: allclose at the runtime precision's default tolerance."""
    return None


@pytest.fixture
def navigator_dataloader() -> SizedDataLoader | None:
    """Override to return a SizedDataLoader of your own samples (dicts by input name, tuples in input
    order, or arrays for one-input models); they are checked on every runtime before generated samples."""
    return None


@pytest.fixture
def navigator_profile(
    request: pytest.FixtureRequest, navigator_session: NavigatorSession
) -> Callable[..., RuntimeProfile]:
    """`navigator_profile(runtime, model=None, mode=None, window=None, stability=None, max_trials=None)`
    measures a runtime as the generated test_performance tests do, under this test's `navigator` marker;
    returns the RuntimeProfile, fails the test when the measurement is unstable."""

    def profile(runtime: str | Runner, model: Model | None = None, **settings: Any) -> RuntimeProfile:
        name = runtime.runtime if not isinstance(runtime, str) else runtime
        return run_profile(request.node, _chosen_model(request, navigator_session, model, name), name, **settings)

    return profile


def _chosen_model(
    request: pytest.FixtureRequest, session: NavigatorSession, model: Model | None, runtime: str
) -> Model:
    """The model a fixture call means: given, the test's navigator_model, or the only one of the run."""
    chosen = model or request.node.funcargs.get("navigator_model")
    if chosen is None:
        models = list(session.models.values())
        if len(models) != 1:
            raise pytest.UsageError(
                f"{request.fixturename}({runtime!r}): {len(models)} models are given; pass model= (or use the navigator_model fixture)."
            )
        chosen = models[0]
    return chosen


@pytest.fixture
def navigator_check(
    request: pytest.FixtureRequest,
    navigator_session: NavigatorSession,
    navigator_verify: VerifyFunction | None,
    navigator_dataloader: SizedDataLoader | None,
) -> Callable[..., CorrectnessReport]:
    """`navigator_check(runtime, model=None, verify=None, examples=None, strict=None, allow_nonfinite=None)`
    runs the same property check as the generated tests from your own test, under its `navigator` marker."""

    def check(
        runtime: str | Runner,
        model: Model | None = None,
        verify: VerifyFunction | None = None,
        examples: int | None = None,
        strict: bool | None = None,
        allow_nonfinite: bool | None = None,
    ) -> CorrectnessReport:
        name = runtime.runtime if not isinstance(runtime, str) else runtime
        return run_check(
            request.node,
            _chosen_model(request, navigator_session, model, name),
            name,
            navigator_verify,
            navigator_dataloader,
            verify=verify,
            examples=examples,
            strict=strict,
            allow_nonfinite=allow_nonfinite,
        )

    return check

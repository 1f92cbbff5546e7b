"""The pytest plugin: options, generated tests per model and runtime, fixtures. Glue only.

Nothing here imports an ML library at import time: `pytest --help` and runs without
`--navigator-model` stay as fast as without the plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_navigator.config import SizedDataLoader, VerifyFunction
    from pytest_navigator.correctness import CorrectnessReport
    from pytest_navigator.model import Model
    from pytest_navigator.profiler import RuntimeProfile
    from pytest_navigator.runtimes import Runner
    from pytest_navigator.session import NavigatorSession, RuntimePlan
    from pytest_navigator.settings import Settings

SESSION_KEY = pytest.StashKey["NavigatorSession"]()

#: (option, dest, ini name, ini type, help). Every option has an ini twin.
_OPTIONS: list[tuple[str, str, str, str, str]] = [
    (
        "--navigator-model",
        "navigator_models",
        "navigator_models",
        "paths",
        "Model file to test (TorchScript, .pt2, .onnx; repeatable). Generates MODEL::test_correctness[RUNTIME] tests.",
    ),
    (
        "--navigator-input",
        "navigator_inputs",
        "navigator_inputs",
        "linelist",
        "Input spec NAME:DTYPE[DIMS]{LOW..HIGH}, e.g. 'input:float32[N,3,224,224]' (repeatable; N is the batch axis).",
    ),
    (
        "--navigator-runtimes",
        "navigator_runtimes",
        "navigator_runtimes",
        "string",
        "Comma-separated runtimes to test (default: every runtime the model's format can use).",
    ),
    (
        "--navigator-batch-sizes",
        "navigator_batch_sizes",
        "navigator_batch_sizes",
        "string",
        "Comma-separated batch sizes: samples are checked at these (default: 1,4), and the profiler measures exactly these (default: powers of two until throughput stops growing).",
    ),
    (
        "--navigator-trust-model",
        "navigator_trust_model",
        "navigator_trust_model",
        "bool",
        "Allow loading pickled nn.Modules (torch.save): unpickling runs code stored in the file.",
    ),
    (
        "--navigator-samples",
        "navigator_samples",
        "navigator_samples",
        "string",
        "An .npz file (keys are input names) or a folder of them: checked on every runtime before generated samples.",
    ),
    (
        "--navigator-examples",
        "navigator_examples",
        "navigator_examples",
        "string",
        "Generated samples per runtime (default 25; 0 checks only --navigator-samples and navigator_dataloader).",
    ),
    (
        "--navigator-seed",
        "navigator_seed",
        "navigator_seed",
        "string",
        "Seed of the generated samples (default: 0 under the navigator-ci profile, else a new one per run).",
    ),
    (
        "--navigator-strict",
        "navigator_strict",
        "navigator_strict",
        "bool",
        "Fail, instead of warning, when a check cannot fail (reference outputs tiny or constant).",
    ),
    (
        "--navigator-mode",
        "navigator_mode",
        "navigator_mode",
        "string",
        "Measurement windows: 'count' (N requests each, the default) or 'time' (N milliseconds each).",
    ),
    (
        "--navigator-window",
        "navigator_window",
        "navigator_window",
        "string",
        "Window length: requests in count mode (default 50), milliseconds in time mode (default 5000).",
    ),
    (
        "--navigator-stability",
        "navigator_stability",
        "navigator_stability",
        "string",
        "A measurement is stable when the last 3 windows' throughput and p50 latency lie within this percentage of their mean (default 10).",
    ),
    (
        "--navigator-max-trials",
        "navigator_max_trials",
        "navigator_max_trials",
        "string",
        "Windows measured per batch size before an unsettled measurement is reported unstable (default 10).",
    ),
    (
        "--navigator-no-profile",
        "navigator_no_profile",
        "navigator_no_profile",
        "bool",
        "Check correctness only: generate no MODEL::test_performance[RUNTIME] tests.",
    ),
    (
        "--navigator-baselines",
        "navigator_baselines",
        "navigator_baselines",
        "string",
        "Directory of stored performance baselines (default: baselines/ under the rootdir).",
    ),
    (
        "--navigator-report",
        "navigator_report",
        "navigator_report",
        "string",
        "Write a JSON report of the run to this path.",
    ),
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("navigator", "pytest-navigator: correctness and speed of ML inference runtimes")
    for option, dest, ini, kind, help_text in _OPTIONS:
        if kind == "bool":
            group.addoption(option, action="store_true", default=None, dest=dest, help=help_text)
        elif kind in ("paths", "linelist"):
            group.addoption(
                option, action="append", default=None, dest=dest, metavar=option.split("-")[-1].upper(), help=help_text
            )
        else:
            group.addoption(option, action="store", default=None, dest=dest, help=help_text)
        parser.addini(ini, help=help_text, type=kind, default=False if kind == "bool" else None)  # type: ignore[arg-type]
    group.addoption(
        "--update-baselines",
        action="store_true",
        default=False,
        dest="navigator_update_baselines",
        help="Rewrite the stored baselines of the runtimes measured in this run.",
    )


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_navigator import hooks

    pluginmanager.add_hookspecs(hooks)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "navigator(verify=None, examples=None, strict=None, mode=None, window=None, stability=None, max_trials=None, "
        "profile=None): settings of pytest-navigator's checks for this test (verify: a VerifyFunction; examples: "
        "generated samples; strict: fail when a check cannot fail; mode/window/stability/max_trials: as the "
        "--navigator-* options; profile=False: no measurement).",
    )
    if _value(config, "navigator_models", "navigator_models"):
        config.pluginmanager.register(NavigatorPlugin(config), "navigator-session")


def _value(config: pytest.Config, dest: str, ini: str) -> Any:
    """The command-line value when given, else the ini value."""
    value = config.getoption(dest)
    return value if value is not None else config.getini(ini)


def _settings(config: pytest.Config) -> Settings:
    from pytest_navigator.config import ProfilerConfig
    from pytest_navigator.settings import Settings, parse_batch_sizes, parse_count, parse_runtimes, profiler_config

    cli_models = config.getoption("navigator_models")
    invocation = config.invocation_params.dir
    models = (
        [invocation / p for p in cli_models] if cli_models else [Path(p) for p in config.getini("navigator_models")]
    )
    baselines = _value(config, "navigator_baselines", "navigator_baselines")
    report = _value(config, "navigator_report", "navigator_report")
    samples = _value(config, "navigator_samples", "navigator_samples")
    seed = _value(config, "navigator_seed", "navigator_seed")
    batch_sizes = _value(config, "navigator_batch_sizes", "navigator_batch_sizes")
    profiler = profiler_config(
        ProfilerConfig(),
        mode=_value(config, "navigator_mode", "navigator_mode") or None,
        window=_value(config, "navigator_window", "navigator_window") or None,
        stability=_value(config, "navigator_stability", "navigator_stability") or None,
        max_trials=_value(config, "navigator_max_trials", "navigator_max_trials") or None,
        profile=False if _value(config, "navigator_no_profile", "navigator_no_profile") else None,
        batch_sizes=batch_sizes or None,
    )
    return Settings(
        models=tuple(dict.fromkeys(Path(m).absolute() for m in models)),
        cli_inputs=tuple(config.getoption("navigator_inputs") or ()),
        ini_inputs=tuple(config.getini("navigator_inputs") or ()),
        runtimes=parse_runtimes(_value(config, "navigator_runtimes", "navigator_runtimes")),
        batch_sizes=parse_batch_sizes(batch_sizes),
        trust_model=bool(_value(config, "navigator_trust_model", "navigator_trust_model")),
        baselines_dir=Path(baselines) if baselines else config.rootpath / "baselines",
        report_path=Path(report) if report else None,
        update_baselines=bool(config.getoption("navigator_update_baselines")),
        examples=parse_count(_value(config, "navigator_examples", "navigator_examples"), "--navigator-examples", 25),
        samples_path=invocation / samples if samples else None,
        strict=bool(_value(config, "navigator_strict", "navigator_strict")),
        hypothesis_profile=config.getoption("hypothesis_profile", None),
        seed=parse_count(seed, "--navigator-seed", 0) if seed not in (None, "") else None,
        state_dir=config.rootpath / ".navigator",
        invocation_dir=invocation,
        profiler=profiler,
    )


class NavigatorPlugin:
    """Registered only with --navigator-model (or the ini twin): loads models and generates tests."""

    def __init__(self, config: pytest.Config) -> None:
        from pytest_navigator.errors import NavigatorError
        from pytest_navigator.runtimes import default_registry
        from pytest_navigator.session import NavigatorSession

        try:
            registry = default_registry()
            config.hook.pytest_navigator_register_runtimes(registry=registry, config=config)
            session = NavigatorSession(_settings(config), registry)
            registry.select(session.settings.runtimes)  # unknown names fail now, listing the known ones
            session.load_models()
            session.load_user_samples()
        except NavigatorError as exc:
            raise pytest.UsageError(str(exc)) from None
        config.stash[SESSION_KEY] = session
        self.session = session
        self._model_files = {p.resolve(): p for p in session.settings.models}
        self._point_collection_at_models(config)

    def _point_collection_at_models(self, config: pytest.Config) -> None:
        """`pytest --navigator-model=m.pt2` collects the model's tests only; explicit paths add to them."""
        models = [str(p) for p in self.session.settings.models]
        if config.args_source == pytest.Config.ArgsSource.ARGS:
            config.args = [*config.args, *models]
        else:
            config.args = models

    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
        if file_path.resolve() in self._model_files:
            return ModelFile.from_parent(parent, path=file_path)
        return None

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from pytest_navigator.report import runtime_table

        if self.session.records:
            terminalreporter.section("navigator runtimes")
            terminalreporter.line(runtime_table(self.session))
        if self.session.profiles:
            from pytest_navigator.report import performance_summary

            terminalreporter.section("navigator performance")
            terminalreporter.line(performance_summary(self.session))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.session.close()


class ModelFile(pytest.File):
    """A model file as a collector: one test per runtime, with no test file written by the user."""

    def collect(self) -> Iterator[pytest.Item]:
        session = self.config.stash[SESSION_KEY]
        model = session.models[next(p for p in session.models if p.resolve() == self.path.resolve())]
        plans = session.plan(model)
        kinds: list[type[NavigatorItem]] = [CorrectnessItem]
        if session.settings.profiler.run_profiling:
            kinds.append(PerformanceItem)
        for kind in kinds:  # every correctness test first: they build the runtimes the profiler reuses
            for plan in plans:
                item = kind.from_parent(self, name=f"{kind.test_name}[{plan.name}]", model=model, plan=plan)
                item.add_marker(pytest.mark.navigator)
                if plan.skip_reason:
                    item.add_marker(pytest.mark.skip(reason=f"{plan.name}: {plan.skip_reason}"))
                yield item


def _test_correctness(request: pytest.FixtureRequest, navigator_verify: Any, navigator_dataloader: Any) -> None:
    """The body of every generated test_correctness[<runtime>]: fixtures resolved by pytest, then the check."""
    item = request.node
    assert isinstance(item, CorrectnessItem)
    _run_check(item, item.navigator_model, item.navigator_runtime, navigator_verify, navigator_dataloader)


def _test_performance(request: pytest.FixtureRequest) -> None:
    """The body of every generated test_performance[<runtime>]: profile, keep the profile, fail when unstable."""
    item = request.node
    assert isinstance(item, PerformanceItem)
    _run_profile(item, item.navigator_model, item.navigator_runtime)


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
        from pytest_navigator.correctness import CorrectnessFailure
        from pytest_navigator.errors import NavigatorError
        from pytest_navigator.profiler import PerformanceFailure

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


#: Settings the navigator marker takes: the check's, then the profiler's (as settings.PROFILER_SETTINGS).
_CHECK_SETTINGS = ("verify", "examples", "strict")
_PROFILE_SETTINGS = ("mode", "window", "stability", "max_trials", "profile", "batch_sizes")


def _marker_settings(node: pytest.Item, overrides: dict[str, Any]) -> dict[str, Any]:
    """The navigator markers' settings (the closest marker wins) updated with non-None overrides."""
    from pytest_navigator.settings import OptionError

    settings: dict[str, Any] = {}
    for marker in reversed(list(node.iter_markers("navigator"))):
        settings.update(marker.kwargs)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(settings) - set(_CHECK_SETTINGS) - set(_PROFILE_SETTINGS))
    if unknown:
        raise OptionError(
            f"{node.nodeid}: the navigator marker has no setting {', '.join(map(repr, unknown))}; "
            f"it takes {', '.join(_CHECK_SETTINGS + _PROFILE_SETTINGS)}."
        )
    return settings


def _run_profile(node: pytest.Item, model: Model, runtime: str, **overrides: Any) -> RuntimeProfile:
    """Profile one runtime with the options, updated by the navigator marker and call arguments;
    skip when profiling is off, fail when the measurement is unstable."""
    from pytest_navigator.profiler import check_profile
    from pytest_navigator.settings import profiler_config

    session = node.config.stash[SESSION_KEY]
    settings = _marker_settings(node, overrides)
    chosen = {k: settings[k] for k in _PROFILE_SETTINGS if k in settings}
    config = profiler_config(session.settings.profiler, f"{node.nodeid}: ", **chosen)
    if not config.run_profiling:
        pytest.skip("profiling is off (--navigator-no-profile or navigator(profile=False))")
    profile = session.profile(model, runtime, config)
    check_profile(profile, model.name)
    return profile


def _run_check(
    node: pytest.Item, model: Model, runtime: str, fixture_verify: Any, dataloader: Any, **overrides: Any
) -> CorrectnessReport:
    """One runtime's check with settings from, by precedence: call arguments, the navigator marker,
    the navigator_verify / navigator_dataloader fixtures, then options and ini."""
    from pytest_navigator.correctness import CheckOptions
    from pytest_navigator.settings import OptionError
    from pytest_navigator.user_samples import check_samples, samples_from_dataloader

    session = node.config.stash[SESSION_KEY]
    settings = _marker_settings(node, overrides)
    verify = settings.get("verify", fixture_verify)
    if verify is not None and not callable(verify):
        raise OptionError(
            f"{node.nodeid}: verify={verify!r} is not a VerifyFunction; give a callable (reference samples, runtime samples) -> bool, e.g. pytest_navigator.allclose(atol=1e-3)."
        )
    explicit = list(session.user_samples(model))
    if dataloader is not None:
        explicit += check_samples(samples_from_dataloader(dataloader, model.io_spec), model.io_spec)
    examples = settings.get("examples", session.settings.examples)
    if not isinstance(examples, int) or examples < 0:
        raise OptionError(f"{node.nodeid}: examples={examples!r}; give a whole number >= 0.")
    options = CheckOptions(verify, examples, tuple(explicit), bool(settings.get("strict", session.settings.strict)))
    return session.check_correctness(model, runtime, options)


# -- fixtures for users' own tests ----------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "navigator_model" not in metafunc.fixturenames:
        return
    session = metafunc.config.stash.get(SESSION_KEY, None)
    if session is None:
        return  # the fixtures skip with the reason
    models = list(session.models.values())
    metafunc.parametrize("navigator_model", models, indirect=True, ids=[m.name for m in models], scope="session")
    if "navigator_runner" in metafunc.fixturenames:
        names = list(dict.fromkeys(p.name for m in models for p in session.plan(m)))
        metafunc.parametrize("navigator_runner", names, indirect=True, ids=names, scope="session")


@pytest.fixture(scope="session")
def navigator_session(pytestconfig: pytest.Config) -> NavigatorSession:
    """The run's NavigatorSession (models, runtimes, reference outputs)."""
    session = pytestconfig.stash.get(SESSION_KEY, None)
    if session is None:
        pytest.skip("no model given: run pytest with --navigator-model=PATH")
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
    from pytest_navigator.errors import RuntimeBuildError

    plans = {p.name: p for p in navigator_session.plan(navigator_model)}
    plan = plans.get(request.param)
    if plan is None:
        pytest.skip(f"{request.param} does not apply to {navigator_model.name}")
    if plan.skip_reason:
        pytest.skip(f"{plan.name}: {plan.skip_reason}")
    try:
        return navigator_session.runner(navigator_model, plan.name)
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
        return _run_profile(request.node, _chosen_model(request, navigator_session, model, name), name, **settings)

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
    """`navigator_check(runtime, model=None, verify=None, examples=None, strict=None)` runs the same
    property check as the generated tests from your own test, under its `navigator` marker."""

    def check(
        runtime: str | Runner,
        model: Model | None = None,
        verify: VerifyFunction | None = None,
        examples: int | None = None,
        strict: bool | None = None,
    ) -> CorrectnessReport:
        name = runtime.runtime if not isinstance(runtime, str) else runtime
        return _run_check(
            request.node,
            _chosen_model(request, navigator_session, model, name),
            name,
            navigator_verify,
            navigator_dataloader,
            verify=verify,
            examples=examples,
            strict=strict,
        )

    return check

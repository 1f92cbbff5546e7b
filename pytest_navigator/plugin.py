"""The pytest plugin: options, generated tests per model and runtime, fixtures. Glue only.

Nothing here imports an ML library at import time: `pytest --help` and runs without
`--navigator-model` stay as fast as without the plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_navigator.items import SESSION_KEY, ModelFile, run_check, run_profile

if TYPE_CHECKING:
    from pytest_navigator.config import SizedDataLoader, VerifyFunction
    from pytest_navigator.correctness import CorrectnessReport
    from pytest_navigator.model import Model
    from pytest_navigator.profiler import RuntimeProfile
    from pytest_navigator.runtimes import Runner
    from pytest_navigator.session import NavigatorSession
    from pytest_navigator.settings import Settings

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
        "--navigator-thresholds",
        "navigator_thresholds",
        "navigator_thresholds",
        "string",
        "Regression limits, METRIC=LIMIT by commas: a percentage of the baseline or an absolute value (samples/s, ms); "
        "metrics throughput, p50, p90, p95, p99 (default: throughput=95%,p95=110%,p99=110%).",
    ),
    (
        "--navigator-require-baseline",
        "navigator_require_baseline",
        "navigator_require_baseline",
        "bool",
        "Fail a performance test that has no stored baseline for this hardware (default: NEW passes).",
    ),
    (
        "--navigator-inconclusive",
        "navigator_inconclusive",
        "navigator_inconclusive",
        "string",
        "What an unstable measurement does: 'fail' (default) or 'warn'.",
    ),
    (
        "--navigator-normalize",
        "navigator_normalize",
        "navigator_normalize",
        "bool",
        "Judge baselines on calibration-normalized figures (throughput relative to a fixed workload measured beside it), not raw ones.",
    ),
    (
        "--navigator-against",
        "navigator_against",
        "navigator_against",
        "string",
        "An older model file (e.g. from the main branch): each runtime measures both, windows interleaved, and is judged against the old one (A/B, no stored baseline needed).",
    ),
    (
        "--navigator-runtime-option",
        "navigator_runtime_options",
        "navigator_runtime_options",
        "linelist",
        "A runtime's option, RUNTIME:OPTION=VALUE[,OPTION=VALUE] (repeatable), e.g. onnxruntime-cpu:intra_op_num_threads=1; "
        "options that differ from the defaults are part of the runtime's id in test ids, reports and baselines.",
    ),
    (
        "--navigator-cache",
        "navigator_cache",
        "navigator_cache",
        "string",
        "Directory of built artifacts (ONNX exports, TorchScript, TensorRT engines, torch.compile's caches) reused "
        "across runs, keyed by model content, options, library versions and device (default: .navigator/cache "
        "under the rootdir; 'none' builds everything in a temporary folder).",
    ),
    (
        "--navigator-rebuild",
        "navigator_rebuild",
        "navigator_rebuild",
        "bool",
        "Build every artifact again and replace its cache entry.",
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
        "Write a JSON report of the run to this path (schema: pytest_navigator/report.schema.json).",
    ),
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("navigator", "pytest-navigator: correctness and speed of ML inference runtimes")
    for option, dest, ini, kind, ini_help in _OPTIONS:
        help_text = ini_help.replace("%", "%%")  # argparse %-formats option help; ini help is printed as is
        if kind == "bool":
            group.addoption(option, action="store_true", default=None, dest=dest, help=help_text)
        elif kind in ("paths", "linelist"):
            group.addoption(
                option, action="append", default=None, dest=dest, metavar=option.split("-")[-1].upper(), help=help_text
            )
        else:
            group.addoption(option, action="store", default=None, dest=dest, help=help_text)
        parser.addini(ini, help=ini_help, type=kind, default=False if kind == "bool" else None)  # type: ignore[arg-type]
    group.addoption(
        "--update-baselines",
        action="store_true",
        default=False,
        dest="navigator_update_baselines",
        help="Accept today's speed: write this run's stable measurements of runtimes that passed correctness into the baseline files, keeping every other entry.",
    )


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_navigator import hooks

    pluginmanager.add_hookspecs(hooks)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "navigator(verify=None, examples=None, strict=None, mode=None, window=None, stability=None, max_trials=None, "
        "profile=None, batch_sizes=None, thresholds=None, runtime_options=None): settings of pytest-navigator's checks for this test (verify: a VerifyFunction; examples: "
        "generated samples; strict: fail when a check cannot fail; mode/window/stability/max_trials: as the "
        "--navigator-* options; profile=False: no measurement; thresholds: e.g. {'throughput': '95%'}; runtime_options: e.g. "
        "{'onnxruntime-cpu': {'intra_op_num_threads': 1}} for the navigator_runner fixture).",
    )
    if _value(config, "navigator_models", "navigator_models"):
        config.pluginmanager.register(NavigatorPlugin(config), "navigator-session")


def _value(config: pytest.Config, dest: str, ini: str) -> Any:
    """The command-line value when given, else the ini value."""
    value = config.getoption(dest)
    return value if value is not None else config.getini(ini)


def _settings(config: pytest.Config) -> Settings:
    from pytest_navigator.config import ProfilerConfig
    from pytest_navigator.runtime_options import parse_option_specs
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
    inconclusive = (_value(config, "navigator_inconclusive", "navigator_inconclusive") or "fail").strip().lower()
    if inconclusive not in ("fail", "warn"):
        from pytest_navigator.settings import OptionError

        raise OptionError(f"--navigator-inconclusive={inconclusive!r}: give 'fail' or 'warn'.")
    against = _value(config, "navigator_against", "navigator_against") or None
    thresholds = _value(config, "navigator_thresholds", "navigator_thresholds") or None
    if thresholds is not None:
        from pytest_navigator.verdicts import parse_thresholds

        parse_thresholds(thresholds)  # a bad value stops the run now, naming the option
    runtime_options = parse_option_specs(config.getini("navigator_runtime_options") or (), "navigator_runtime_options")
    for runtime, values in parse_option_specs(
        config.getoption("navigator_runtime_options") or (), "--navigator-runtime-option"
    ).items():
        runtime_options.setdefault(runtime, {}).update(values)  # the command line wins over the ini
    cache = _value(config, "navigator_cache", "navigator_cache") or None
    cache_dir = (
        config.rootpath / ".navigator" / "cache"
        if cache is None
        else None
        if cache.strip().lower() == "none"
        else invocation / cache
    )
    return Settings(
        models=tuple(dict.fromkeys(Path(m).absolute() for m in models)),
        cli_inputs=tuple(config.getoption("navigator_inputs") or ()),
        ini_inputs=tuple(config.getini("navigator_inputs") or ()),
        runtimes=parse_runtimes(_value(config, "navigator_runtimes", "navigator_runtimes")),
        batch_sizes=parse_batch_sizes(batch_sizes),
        trust_model=bool(_value(config, "navigator_trust_model", "navigator_trust_model")),
        baselines_dir=Path(baselines) if baselines else config.rootpath / "baselines",
        report_path=invocation / report if report else None,
        update_baselines=bool(config.getoption("navigator_update_baselines")),
        examples=parse_count(_value(config, "navigator_examples", "navigator_examples"), "--navigator-examples", 25),
        samples_path=invocation / samples if samples else None,
        strict=bool(_value(config, "navigator_strict", "navigator_strict")),
        hypothesis_profile=config.getoption("hypothesis_profile", None),
        seed=parse_count(seed, "--navigator-seed", 0) if seed not in (None, "") else None,
        state_dir=config.rootpath / ".navigator",
        invocation_dir=invocation,
        profiler=profiler,
        thresholds=thresholds,
        require_baseline=bool(_value(config, "navigator_require_baseline", "navigator_require_baseline")),
        inconclusive=inconclusive,
        normalize=bool(_value(config, "navigator_normalize", "navigator_normalize")),
        against=invocation / against if against else None,
        runtime_options=runtime_options,
        cache_dir=cache_dir,
        rebuild=bool(_value(config, "navigator_rebuild", "navigator_rebuild")),
    )


#: Loggers of the libraries a run drives. Under pytest's --log-level=DEBUG (or a log_level ini) their
#: debug records (inductor's compile steps, every file lock taken) would fill a failing test's
#: "Captured log" section with hundreds of lines that say nothing about the failure.
LIBRARY_LOGGERS = ("torch", "filelock", "onnx", "onnxscript", "onnx_ir", "onnxruntime", "tensorrt", "triton", "transformers")


def quiet_library_loggers() -> None:
    """Library loggers log warnings and errors only, unless the user set their level explicitly
    (TORCH_LOGS does): a library logger at NOTSET inherits pytest's root level, DEBUG included."""
    import logging

    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
    logging.getLogger("torch.__trace").propagate = False  # torch's structured trace: TORCH_TRACE's own file


class NavigatorPlugin:
    """Registered only with --navigator-model (or the ini twin): loads models and generates tests."""

    def __init__(self, config: pytest.Config) -> None:
        from pytest_navigator.errors import NavigatorError
        from pytest_navigator.runtimes import default_registry
        from pytest_navigator.session import NavigatorSession

        quiet_library_loggers()
        try:
            registry = default_registry()
            config.hook.pytest_navigator_register_runtimes(registry=registry, config=config)
            session = NavigatorSession(_settings(config), registry)
            registry.select(session.settings.runtimes)  # unknown names fail now, listing the known ones
            for name in session.settings.runtime_options:
                session.runtime_id(name)  # unknown runtimes, options or values fail now too
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

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller merges and writes
            workeroutput["navigator"] = self.session.worker_results()
            return
        if self.session.settings.report_path is not None:
            from pytest_navigator.json_report import write_report

            write_report(self.session, self.session.settings.report_path)
        if self.session.settings.update_baselines:
            from pytest_navigator.baselines import BaselineError

            self.session.update_baselines()
            if any(isinstance(o, BaselineError) for o in self.session.baseline_updates.values()):
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist controller: take in a worker's measurements and correctness outcomes."""
        results = getattr(node, "workeroutput", {}).get("navigator")
        if results:
            self.session.merge_worker_results(results)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from pytest_navigator.report import runtime_table

        if self.session.records:
            terminalreporter.section("navigator runtimes")
            terminalreporter.line(runtime_table(self.session))
        if self.session.profiles:
            from pytest_navigator.report import performance_summary

            terminalreporter.section("navigator performance")
            terminalreporter.line(performance_summary(self.session))
            from pytest_navigator.report import baseline_summary

            text = baseline_summary(self.session)
            if text:
                terminalreporter.section("navigator baselines")
                terminalreporter.line(text)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.session.close()


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
        overrides: dict[str, Any] = {}
        for marker in reversed(list(metafunc.definition.iter_markers("navigator"))):
            overrides.update(marker.kwargs.get("runtime_options") or {})
        from pytest_navigator.errors import NavigatorError

        where = f"{metafunc.definition.nodeid}: navigator marker runtime_options"
        try:
            for name, values in overrides.items():  # every marker entry is checked, not only the planned ones
                session.runtime_id(name, values, where)
            names = list(
                dict.fromkeys(
                    session.runtime_id(p.definition.name, overrides.get(p.definition.name), where)
                    for m in models
                    for p in session.plan(m)
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

    plans = {p.definition.name: p for p in navigator_session.plan(navigator_model)}
    plan = plans.get(navigator_session.registry.get(request.param).name)
    if plan is None:
        pytest.skip(f"{request.param} does not apply to {navigator_model.name}")
    if plan.skip_reason:
        pytest.skip(f"{request.param}: {plan.skip_reason}")
    try:
        return navigator_session.runner(navigator_model, request.param)
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
        return run_check(
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

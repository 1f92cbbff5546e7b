"""The pytest plugin: hooks only. Options come from options.py, settings from settings.py, the
generated tests from items.py, the fixtures from fixtures.py; the work is the library's.

Nothing here imports an ML library at import time: `pytest --help` and runs without
`--navigator-model` stay as fast as without the plugin.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from pytest_navigator import options
from pytest_navigator.logs import quiet_library_loggers
from pytest_navigator.plugin.fixtures import (  # noqa: F401 - fixtures and their parametrization, registered with the plugin
    navigator_check,
    navigator_dataloader,
    navigator_model,
    navigator_profile,
    navigator_runner,
    navigator_session,
    navigator_verify,
    pytest_generate_tests,
)
from pytest_navigator.plugin.items import SESSION_KEY, ModelFile


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("navigator", "pytest-navigator: correctness and speed of ML inference runtimes")
    for option in options.OPTIONS:
        help_text = option.argparse_help
        if option.kind == "bool":
            default = False if option.ini is None else None
            group.addoption(option.flag, action="store_true", default=default, dest=option.dest, help=help_text)
        elif option.kind in ("paths", "linelist"):
            group.addoption(
                option.flag, action="append", default=None, dest=option.dest, metavar=option.metavar, help=help_text
            )
        else:
            group.addoption(option.flag, action="store", default=None, dest=option.dest, help=help_text)
        if option.ini is not None:
            default = False if option.kind == "bool" else None
            parser.addini(option.ini, help=option.help, type=option.kind, default=default)  # type: ignore[arg-type]


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_navigator.plugin import hookspecs as hooks

    pluginmanager.add_hookspecs(hooks)


#: The pytest configs alive in this process: a second is a run inside another's test, which must leave the
#: outer process's heap unfrozen (it would keep every such run's objects for good).
_CONFIGS: list[pytest.Config] = []


def pytest_configure(config: pytest.Config) -> None:
    _CONFIGS.append(config)
    config.addinivalue_line("markers", options.MARKER_LINE)
    from pytest_navigator.plugin import devices

    devices.configure(config)  # an xdist worker's GPU, before the session below or any test touches CUDA
    if config.getoption("navigator_models") or config.getini("navigator_models"):
        config.pluginmanager.register(NavigatorPlugin(config), "navigator-session")


def pytest_unconfigure(config: pytest.Config) -> None:
    _CONFIGS.remove(config)


class NavigatorPlugin:
    """Registered only with --navigator-model (or the ini twin): loads models and generates tests."""

    def __init__(self, config: pytest.Config) -> None:
        from pytest_navigator.config import MeasurementMode
        from pytest_navigator.errors import NavigatorError
        from pytest_navigator.locations import check_locations
        from pytest_navigator.plugin import calibration
        from pytest_navigator.runtimes import default_registry
        from pytest_navigator.session import NavigatorSession
        from pytest_navigator.settings import settings_from

        quiet_library_loggers()
        try:
            registry = default_registry()
            config.hook.pytest_navigator_register_runtimes(registry=registry, config=config)
            settings = settings_from(
                config.getoption,
                config.getini,
                invocation_dir=config.invocation_params.dir,
                rootdir=config.rootpath,
                hypothesis_profile=config.getoption("hypothesis_profile", None),
            )
            check_locations(settings)
            session = NavigatorSession(settings, registry)
            session.builds.user_samples = calibration.hooked(config, session.builds.user_samples)
            registry.select(settings.runtimes)  # unknown names fail now, listing the known ones
            for name in session.runtime_options:
                session.builds.runtime_id(name)  # unknown runtimes, options or values fail now too
            xdist_controller = getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput")
            starts_workers = not config.option.collectonly and not xdist_controller
            if settings.isolation == "process" and starts_workers:
                from pytest_navigator.runtimes.remote import start_fork_server

                start_fork_server(settings.model_files)  # it imports and loads them beside the loading below
            if (
                settings.profiler.run_profiling
                and settings.profiler.measurement_mode is MeasurementMode.INSTRUCTIONS
                and starts_workers
            ):
                from pytest_navigator.measure.valgrind import start_counting_server

                start_counting_server()  # its imports under valgrind overlap the correctness tests
            for model in session.load_models():
                session.builds.check_batch_sizes(model)
            session.load_user_samples()
        except NavigatorError as exc:
            raise pytest.UsageError(str(exc)) from None
        config.stash[SESSION_KEY] = session
        self.session = session
        self.report_error = ""
        self._model_files = {p.resolve(): p for p in settings.models}
        # `pytest --navigator-model=m.pt2` collects the model's tests only; explicit paths add to them.
        models = [str(p) for p in settings.models]
        config.args = [*config.args, *models] if config.args_source == pytest.Config.ArgsSource.ARGS else models

    def pytest_report_header(self, config: pytest.Config) -> str:
        """The settings that decide the run's outcome, before it starts (as Hypothesis prints its profile)."""
        from pytest_navigator.check.hypothesis_profiles import default_profile, derandomized

        settings = self.session.settings
        profile = settings.hypothesis_profile or default_profile()
        seed = self.session.checking.run_seed
        how = (
            "given" if settings.seed is not None else "derandomized" if derandomized(profile) else "drawn for this run"
        )
        cache = settings.cache_dir if settings.cache_dir is not None else "none"
        return (
            f"navigator: hypothesis profile {profile!r}, run seed {seed} ({how}), cache {cache}, "
            f"baselines {settings.baselines_dir}"
        )

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        from pytest_navigator.plugin.progress import ProgressLine

        self.progress = ProgressLine(session.config)  # the terminal reporter exists by now
        if self.progress.enabled:
            self.session.watch(self.progress)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Any:
        """Builds (setup) and measurements (call) end with the progress line erased."""
        try:
            return (yield)
        finally:
            progress = getattr(self, "progress", None)
            if progress is not None:
                progress.clear()

    pytest_runtest_call = pytest_runtest_setup

    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
        if file_path.resolve() in self._model_files:
            return ModelFile.from_parent(parent, path=file_path)
        return None

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Start the build of every selected runtime now, each in its worker (runtimes/processes.py):
        not in an xdist worker, which runs only some of the tests it collected."""
        from pytest_navigator.plugin.items import NavigatorItem

        if _CONFIGS == [session.config]:  # not a run inside another's test (pytester's inline runs)
            # The heap this process has now (torch's modules, the loaded models, the tests) lives until the
            # run ends: frozen, no garbage collection walks it again. The exit's collections, pytest's ten
            # included, took 1.7-2.0 s of a MobileNet's warm run before, 0.3-0.4 s after.
            gc.freeze()
        if session.config.option.collectonly or hasattr(session.config, "workerinput"):
            return
        wanted = [
            (item.navigator_model, item.navigator_runtime)
            for item in session.items
            if isinstance(item, NavigatorItem) and item.get_closest_marker("skip") is None
        ]
        self.session.builds.build_ahead(wanted)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        try:
            self._finish(session)
        finally:
            # the runtimes' worker processes are not needed past this point (the summary reads results):
            # closed here, not at unconfigure, so a session's end leaves no process of ours behind
            self.session.close()

    def _finish(self, session: pytest.Session) -> None:
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller merges and writes
            workeroutput["navigator"] = self.session.results.to_json()  # the records, as the controller merges them
            return
        if self.session.finish():  # the session owns the exit status: a file not written, an update refused
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist controller: take in a worker's results."""
        results = getattr(node, "workeroutput", {}).get("navigator")
        if results:
            from pytest_navigator.report.results import RunResults

            # a runtime passed if some worker saw it pass and none saw it fail (RuntimeResult.merge)
            self.session.results.merge(RunResults.from_json(results))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from pytest_navigator.report.terminal import baseline_summary, performance_summary, runtime_table

        for problem in self.session.problems:
            terminalreporter.line(problem, red=True)
        if not self.session.results.runtimes:
            return
        report = self.session.report()
        terminalreporter.section("navigator runtimes")
        terminalreporter.line(runtime_table(report))
        if any(r.profile is not None for r in report.results.runtimes.values()):
            terminalreporter.section("navigator performance")
            terminalreporter.line(performance_summary(report))
            text = baseline_summary(report)
            if text:
                terminalreporter.section("navigator baselines")
                terminalreporter.line(text)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.session.close()

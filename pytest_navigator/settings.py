"""Run settings from options and ini values, validated with errors that name the option."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_navigator import options
from pytest_navigator.config import MeasurementMode, ProfilerConfig, ProfilerConfigError
from pytest_navigator.errors import NavigatorError

DEFAULT_BATCH_SIZES = (1, 4)
#: Processes a timed measurement is taken in where a verdict depends on it (--navigator-processes).
DEFAULT_PROCESSES = 3
MAX_PROCESSES = 50


class OptionError(NavigatorError):
    """An option or ini value that cannot be used."""


@dataclass(frozen=True)
class Settings:
    """Everything one navigator run is configured with; built by the plugin, usable without pytest."""

    models: tuple[Path, ...]
    cli_inputs: tuple[str, ...] = ()
    ini_inputs: tuple[str, ...] = ()
    runtimes: tuple[str, ...] | None = None
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    trust_model: bool = False
    baselines_dir: Path = Path("baselines")
    report_path: Path | None = None
    #: --navigator-html / --navigator-markdown / --navigator-benchmark-json: more views of the run.
    html_path: Path | None = None
    markdown_path: Path | None = None
    benchmark_json_path: Path | None = None
    #: --navigator-latency-budget: the p99 (ms) the best runtime must keep; None: the highest throughput.
    latency_budget_ms: float | None = None
    update_baselines: bool = False
    #: Generated samples per runtime (--navigator-examples); 0 checks users' samples only.
    examples: int = 25
    #: An .npz file or a folder of them (--navigator-samples), checked before generated samples.
    samples_path: Path | None = None
    #: A check that cannot fail (tiny or constant reference outputs) fails instead of warning.
    strict: bool = False
    #: An output with no finite reference value over every sample lets its check pass with a warning
    #: (--navigator-allow-nonfinite); by default it fails.
    allow_nonfinite: bool = False
    #: Hypothesis settings profile: --hypothesis-profile, else navigator-ci under CI, else navigator-dev.
    hypothesis_profile: str | None = None
    #: Seed of the generated samples (--navigator-seed); None: 0 when derandomized, else fresh per run.
    seed: int | None = None
    #: Failing samples and the Hypothesis example database live here (.navigator under the rootdir).
    state_dir: Path = Path(".navigator")
    #: Where pytest was started: paths in messages are shown relative to it.
    invocation_dir: Path | None = None
    #: How performance is measured (--navigator-mode/-window/-stability/-max-trials/-no-profile);
    #: batch_sizes holds --navigator-batch-sizes when given, else None (sweep powers of two).
    profiler: ProfilerConfig = field(default_factory=ProfilerConfig)
    #: Regression thresholds (--navigator-thresholds) as given; None: the defaults. Parsed by the gate
    #: (gate/thresholds.parse_thresholds), as the constraints are (gate/constraints.parse_constraints).
    thresholds: Mapping[str, Any] | str | None = None
    #: Limits on the model profile (--navigator-constraints) as given.
    constraints: Mapping[str, Any] | str | None = None
    #: --navigator-trace: where each runtime's traces go after its profile; None: no traces.
    trace_dir: Path | None = None
    #: A measurement without a stored baseline fails (--navigator-require-baseline).
    require_baseline: bool = False
    #: A measurement without a stored baseline: "pass" (default), "skip" or "fail" (--navigator-missing-baseline).
    missing_baseline: str = "pass"
    #: An unstable measurement: "fail" (default) or "warn" (--navigator-inconclusive).
    inconclusive: str = "fail"
    #: Gate on calibration-normalized figures instead of raw ones (--navigator-normalize).
    normalize: bool = False
    #: --navigator-against: an older model file every runtime is also measured on, interleaved (A/B).
    against: Path | None = None
    #: A script's runtime options: runtime name -> option -> value text.
    runtime_options: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: --navigator-runtime-option and navigator_runtime_options as given ("RUNTIME:OPTION=VALUE,..."),
    #: parsed over runtime_options by runtimes/options.configured_options.
    cli_runtime_options: tuple[str, ...] = ()
    ini_runtime_options: tuple[str, ...] = ()
    #: --navigator-agreement and navigator_agreement as given ("[RUNTIME:]NAME=VALUE,..."), parsed by
    #: check/agreement.thresholds_for (the command line's over the ini's).
    cli_agreement: tuple[str, ...] = ()
    ini_agreement: tuple[str, ...] = ()
    #: Built artifacts reused across runs (--navigator-cache); None: no cache, build everything.
    cache_dir: Path | None = None
    #: --navigator-rebuild: build every artifact again and overwrite its cache entry.
    rebuild: bool = False
    #: --navigator-isolation: "process" (each runtime in a worker process) or "none" (in this process;
    #: the library's default, so scripts and the project's unit tests share runners' state).
    isolation: str = "none"
    #: --navigator-timeout: seconds per request to a runtime's worker; None: the defaults (isolation.Timeouts).
    timeout: float | None = None
    #: --navigator-processes: fresh processes a timed measurement is taken in where a verdict or a
    #: recording depends on it (runs.py); 1: one.
    processes: int = DEFAULT_PROCESSES

    @property
    def model_files(self) -> tuple[Path, ...]:
        """Every model file the run loads: the models, and --navigator-against's."""
        return (*self.models, *([self.against] if self.against is not None else []))


def settings_from(
    cli: Callable[[str], Any],
    ini: Callable[[str], Any],
    *,
    invocation_dir: Path,
    rootdir: Path,
    hypothesis_profile: str | None = None,
) -> Settings:
    """Settings from option values: `cli(dest)` is the command line's value (None when not given),
    `ini(name)` the ini file's. The command line wins; repeatable options (inputs, runtime options)
    keep both, the command line's last. Paths on the command line are relative to where the run was
    invoked; the artifact cache, baselines and state default to folders under the rootdir."""

    def value(flag: str) -> Any:
        option = options.BY_FLAG[flag]
        given = cli(option.dest)
        return given if given is not None or option.ini is None else ini(option.ini)

    cli_models = cli("navigator_models")
    models = (
        [invocation_dir / p for p in cli_models] if cli_models else [Path(p) for p in ini("navigator_models") or ()]
    )
    batch_sizes = value(options.BATCH_SIZES)
    profiler = profiler_config(
        ProfilerConfig(),
        mode=value(options.MODE) or None,
        window=value(options.WINDOW) or None,
        stability=value(options.STABILITY) or None,
        max_trials=value(options.MAX_TRIALS) or None,
        time_budget=value(options.TIME_BUDGET) or None,
        interference=value(options.INTERFERENCE) or None,
        profile=False if value(options.NO_PROFILE) else None,
        batch_sizes=batch_sizes or None,
    )
    inconclusive = (value(options.INCONCLUSIVE) or "fail").strip().lower()
    if inconclusive not in ("fail", "warn"):
        raise OptionError(f"{options.INCONCLUSIVE}={inconclusive!r}: give 'fail' or 'warn'.")
    missing = (value(options.MISSING_BASELINE) or "pass").strip().lower()
    if missing not in ("pass", "skip", "fail"):
        raise OptionError(f"{options.MISSING_BASELINE}={missing!r}: give 'pass', 'skip' or 'fail'.")
    if value(options.REQUIRE_BASELINE):
        missing = "fail"
    cache = value(options.CACHE) or None
    cache_dir = (
        rootdir / ".navigator" / "cache"
        if cache is None
        else None
        if cache.strip().lower() == "none"
        else invocation_dir / cache
    )
    isolation = (value(options.ISOLATION) or "process").strip().lower()
    if isolation not in ISOLATIONS:
        raise OptionError(f"{options.ISOLATION}={isolation!r}: give {' or '.join(map(repr, ISOLATIONS))}.")
    baselines, report, samples = value(options.BASELINES), value(options.REPORT), value(options.SAMPLES)
    seed, against = value(options.SEED), value(options.AGAINST) or None
    return Settings(
        models=tuple(dict.fromkeys(Path(m).absolute() for m in models)),
        cli_inputs=tuple(cli("navigator_inputs") or ()),
        ini_inputs=tuple(ini("navigator_inputs") or ()),
        runtimes=parse_runtimes(value(options.RUNTIMES)),
        batch_sizes=parse_batch_sizes(batch_sizes),
        trust_model=bool(value(options.TRUST_MODEL)),
        baselines_dir=Path(baselines) if baselines else rootdir / "baselines",
        report_path=invocation_dir / report if report else None,
        html_path=invocation_dir / html if (html := value(options.HTML)) else None,
        markdown_path=invocation_dir / markdown if (markdown := value(options.MARKDOWN)) else None,
        benchmark_json_path=invocation_dir / bench if (bench := value(options.BENCHMARK_JSON)) else None,
        latency_budget_ms=parse_latency_budget(value(options.LATENCY_BUDGET)),
        update_baselines=bool(value(options.UPDATE_BASELINES)),
        examples=parse_count(value(options.EXAMPLES), options.EXAMPLES, 25),
        samples_path=invocation_dir / samples if samples else None,
        strict=bool(value(options.STRICT)),
        allow_nonfinite=bool(value(options.ALLOW_NONFINITE)),
        hypothesis_profile=hypothesis_profile,
        seed=parse_count(seed, options.SEED, 0) if seed not in (None, "") else None,
        state_dir=rootdir / ".navigator",
        invocation_dir=invocation_dir,
        profiler=profiler,
        thresholds=value(options.THRESHOLDS) or None,
        constraints=value(options.CONSTRAINTS) or None,
        trace_dir=invocation_dir / trace if (trace := value(options.TRACE)) else None,
        require_baseline=missing == "fail",
        missing_baseline=missing,
        inconclusive=inconclusive,
        normalize=bool(value(options.NORMALIZE)),
        against=invocation_dir / against if against else None,
        cli_runtime_options=tuple(cli("navigator_runtime_options") or ()),
        ini_runtime_options=tuple(ini("navigator_runtime_options") or ()),
        cli_agreement=tuple(cli("navigator_agreement") or ()),
        ini_agreement=tuple(ini("navigator_agreement") or ()),
        cache_dir=cache_dir,
        rebuild=bool(value(options.REBUILD)),
        isolation=isolation,
        timeout=parse_timeout(value(options.TIMEOUT)),
        processes=parse_processes(value(options.PROCESSES)),
    )


ISOLATIONS = ("process", "none")


def parse_latency_budget(value: Any) -> float | None:
    """'20' or '20ms' -> 20.0 milliseconds; None or '' -> None; anything else names the option."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        milliseconds = float(str(value).strip().lower().removesuffix("ms"))
    except ValueError:
        milliseconds = float("nan")
    if not milliseconds > 0 or milliseconds == float("inf"):
        raise OptionError(f"{options.LATENCY_BUDGET}={value!r}: give milliseconds of p99 latency > 0, e.g. 20 or 20ms.")
    return milliseconds


def parse_timeout(value: Any, where: str = "") -> float | None:
    """'30' -> 30.0 seconds; None or '' -> None (the defaults); anything else names the option."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        seconds = float(str(value).strip().removesuffix("s"))
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise OptionError(f"{where}{options.TIMEOUT}={value!r}: give seconds > 0, e.g. 60.")
    return seconds


def parse_runtimes(value: str | None) -> tuple[str, ...] | None:
    """'torch-cpu, onnxruntime-cpu' -> names; empty or None -> None (every runtime)."""
    if value is None or not value.strip():
        return None
    return tuple(name.strip() for name in value.split(",") if name.strip())


def parse_batch_sizes(value: str | Sequence[int] | None, option: str = options.BATCH_SIZES) -> tuple[int, ...]:
    """'1,4,8' -> (1, 4, 8), sorted and de-duplicated; anything else names the option and the value."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_BATCH_SIZES
    tokens = (
        [t.strip() for t in re.split(r"[,\s]+", value.strip())] if isinstance(value, str) else [str(v) for v in value]
    )
    sizes = []
    for token in tokens:
        if not token:
            continue
        if not token.isdigit() or int(token) < 1:
            raise OptionError(
                f"{option}={value!r}: {token!r} is not a batch size; give positive integers separated by commas, e.g. 1,4,16."
            )
        sizes.append(int(token))
    if not sizes:
        raise OptionError(f"{option}={value!r}: no batch sizes given; e.g. 1,4,16.")
    return tuple(sorted(set(sizes)))


def parse_processes(value: str | int | None) -> int:
    """--navigator-processes: a whole number from 1 to MAX_PROCESSES."""
    count = parse_count(value, options.PROCESSES, DEFAULT_PROCESSES)
    if not 1 <= count <= MAX_PROCESSES:
        raise OptionError(
            f"{options.PROCESSES}={value!r}: give a whole number from 1 to {MAX_PROCESSES}, e.g. {DEFAULT_PROCESSES}."
        )
    return count


def parse_count(value: str | int | None, option: str, default: int) -> int:
    """A non-negative integer option ('25') -> 25; anything else names the option and the value."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    text = str(value).strip()
    if not text.isdigit():
        raise OptionError(f"{option}={value!r}: give a whole number >= 0, e.g. {default}.")
    return int(text)


#: Marker and fixture settings of the profiler, with the option each mirrors.
PROFILER_SETTINGS = {
    "mode": options.MODE,
    "window": options.WINDOW,
    "stability": options.STABILITY,
    "max_trials": options.MAX_TRIALS,
    "time_budget": options.TIME_BUDGET,
    "interference": options.INTERFERENCE,
    "profile": options.NO_PROFILE,
}

_MODES = {
    "count": MeasurementMode.COUNT_WINDOWS,
    "count_windows": MeasurementMode.COUNT_WINDOWS,
    "time": MeasurementMode.TIME_WINDOWS,
    "time_windows": MeasurementMode.TIME_WINDOWS,
    "instructions": MeasurementMode.INSTRUCTIONS,
}


def profiler_config(base: ProfilerConfig, where: str = "", **values: Any) -> ProfilerConfig:
    """`base` with the given option values (mode, window, stability, max_trials, profile, batch_sizes)
    applied; None leaves a setting alone. A bad value names the option (prefixed by `where`), the value
    and what is accepted."""
    changes: dict[str, Any] = {}
    unknown = sorted(set(values) - set(PROFILER_SETTINGS) - {"batch_sizes"})
    if unknown:
        raise OptionError(
            f"{where}no profiler setting {', '.join(map(repr, unknown))}; settings: {', '.join(PROFILER_SETTINGS)}."
        )
    mode = values.get("mode")
    if mode is not None:
        key = mode.value if isinstance(mode, MeasurementMode) else str(mode).strip().lower()
        if key not in _MODES:
            raise OptionError(
                f"{where}{options.MODE}={mode!r}: give 'count' (windows of N requests), 'time' (windows of N ms) or 'instructions' "
                "(instructions per request under valgrind's callgrind)."
            )
        changes["measurement_mode"] = _MODES[key]
    window = values.get("window")
    if window is not None:
        count_mode = changes.get("measurement_mode", base.measurement_mode) is MeasurementMode.COUNT_WINDOWS
        number = _number(
            window,
            options.WINDOW,
            where,
            "requests per window (count mode) or milliseconds (time mode), e.g. 50",
            integer=count_mode,
        )
        changes["measurement_request_count" if count_mode else "measurement_interval"] = number
    stability = values.get("stability")
    if stability is not None:
        text = str(stability).strip().removesuffix("%")
        changes["stability_percentage"] = _number(text, options.STABILITY, where, "a percentage in (0, 100], e.g. 10")
    if values.get("max_trials") is not None:
        changes["max_trials"] = _number(
            values["max_trials"], options.MAX_TRIALS, where, "an integer >= 3, e.g. 10", integer=True
        )
    budget = values.get("time_budget")
    if budget is not None:
        unbounded = isinstance(budget, str) and budget.strip().lower() in ("none", "inf", "unbounded")
        changes["time_budget"] = (
            None if unbounded else _number(budget, options.TIME_BUDGET, where, "seconds > 0, e.g. 15, or 'none'")
        )
        if changes["time_budget"] is not None and not 0 < changes["time_budget"] < float("inf"):
            raise OptionError(f"{where}{options.TIME_BUDGET}={budget!r}: give seconds > 0, e.g. 15, or 'none'.")
    interference = values.get("interference")
    if interference is not None:
        chosen = str(interference).strip().lower()
        if chosen not in ("exclude", "report"):
            raise OptionError(
                f"{where}{options.INTERFERENCE}={interference!r}: give 'exclude' (leave busy windows out) or 'report'."
            )
        changes["interference"] = chosen
    if values.get("profile") is not None:
        changes["run_profiling"] = bool(values["profile"])
    if values.get("batch_sizes") is not None:
        changes["batch_sizes"] = parse_batch_sizes(values["batch_sizes"])
    try:
        return ProfilerConfig.from_dict({**base.to_dict(), **changes})
    except ProfilerConfigError as exc:
        given = ", ".join(
            f"{PROFILER_SETTINGS[k]}={values[k]!r}" for k in PROFILER_SETTINGS if values.get(k) is not None
        )
        raise OptionError(f"{where}{given}: {exc}") from None


def _number(value: Any, option: str, where: str, accepted: str, integer: bool = False) -> Any:
    try:
        number = float(str(value).strip())
    except ValueError:
        number = float("nan")
    if number != number or (integer and not number.is_integer()):
        raise OptionError(f"{where}{option}={value!r}: give {accepted}.")
    return int(number) if integer else number

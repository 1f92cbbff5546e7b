"""The option table: every --navigator-* option's name, destination, ini twin, kind and help, without pytest.

The plugin adds options from this table, settings read values by it, and messages and hints name
options through these constants, never a retyped string (Hypothesis's LOAD_PROFILE_OPTION habit).
"""

from __future__ import annotations

from dataclasses import dataclass

MODEL = "--navigator-model"
INPUT = "--navigator-input"
RUNTIMES = "--navigator-runtimes"
BATCH_SIZES = "--navigator-batch-sizes"
TRUST_MODEL = "--navigator-trust-model"
SAMPLES = "--navigator-samples"
EXAMPLES = "--navigator-examples"
SEED = "--navigator-seed"
STRICT = "--navigator-strict"
ALLOW_NONFINITE = "--navigator-allow-nonfinite"
MODE = "--navigator-mode"
WINDOW = "--navigator-window"
STABILITY = "--navigator-stability"
MAX_TRIALS = "--navigator-max-trials"
TIME_BUDGET = "--navigator-time-budget"
PROCESSES = "--navigator-processes"
INTERFERENCE = "--navigator-interference"
NO_PROFILE = "--navigator-no-profile"
THRESHOLDS = "--navigator-thresholds"
CONSTRAINTS = "--navigator-constraints"
TRACE = "--navigator-trace"
REQUIRE_BASELINE = "--navigator-require-baseline"
MISSING_BASELINE = "--navigator-missing-baseline"
INCONCLUSIVE = "--navigator-inconclusive"
NORMALIZE = "--navigator-normalize"
AGAINST = "--navigator-against"
RUNTIME_OPTION = "--navigator-runtime-option"
AGREEMENT = "--navigator-agreement"
CACHE = "--navigator-cache"
REBUILD = "--navigator-rebuild"
BASELINES = "--navigator-baselines"
REPORT = "--navigator-report"
HTML = "--navigator-html"
MARKDOWN = "--navigator-markdown"
BENCHMARK_JSON = "--navigator-benchmark-json"
LATENCY_BUDGET = "--navigator-latency-budget"
DEVICES = "--navigator-devices"
ISOLATION = "--navigator-isolation"
TIMEOUT = "--navigator-timeout"
UPDATE_BASELINES = "--update-baselines"


@dataclass(frozen=True)
class Option:
    """One command-line option and its ini twin.

    kind: "paths" and "linelist" (repeatable), "bool" (a flag), "string" (one value);
    `ini` is None for options with no ini twin (--update-baselines: a decision per run).
    """

    flag: str
    dest: str
    ini: str | None
    kind: str
    help: str

    @property
    def metavar(self) -> str:
        return self.flag.split("-")[-1].upper()

    @property
    def argparse_help(self) -> str:
        """The help as argparse takes it: argparse %-formats help texts, and a help saying "95%," broke
        `--help` (the ini's help is printed as is)."""
        return self.help.replace("%", "%%")


def _option(flag: str, name: str, kind: str, help: str) -> Option:
    return Option(flag, name, name, kind, help)


OPTIONS: tuple[Option, ...] = (
    _option(
        MODEL,
        "navigator_models",
        "paths",
        "Model file to test (TorchScript, .pt2, .onnx; repeatable). Generates MODEL::test_correctness[RUNTIME] tests.",
    ),
    _option(
        INPUT,
        "navigator_inputs",
        "linelist",
        "Input spec NAME:DTYPE[DIMS]{LOW..HIGH}, e.g. 'input:float32[N,3,224,224]' (repeatable; N is the batch axis).",
    ),
    _option(
        RUNTIMES,
        "navigator_runtimes",
        "string",
        "Comma-separated runtimes to test (default: every runtime the model's format can use).",
    ),
    _option(
        BATCH_SIZES,
        "navigator_batch_sizes",
        "string",
        "Comma-separated batch sizes: samples are checked at these (default: 1,4), and the profiler measures exactly "
        "these (default: powers of two until throughput stops growing).",
    ),
    _option(
        TRUST_MODEL,
        "navigator_trust_model",
        "bool",
        "Allow loading pickled nn.Modules (torch.save): unpickling runs code stored in the file.",
    ),
    _option(
        SAMPLES,
        "navigator_samples",
        "string",
        "An .npz file (keys are input names) or a folder of them: checked on every runtime before generated samples.",
    ),
    _option(
        EXAMPLES,
        "navigator_examples",
        "string",
        "Generated samples per runtime (default 25; 0 checks only --navigator-samples and navigator_dataloader).",
    ),
    _option(
        SEED,
        "navigator_seed",
        "string",
        "Seed of the generated samples (default: 0 under the navigator-ci profile, else a new one per run).",
    ),
    _option(
        STRICT,
        "navigator_strict",
        "bool",
        "Fail, instead of warning, when a check cannot fail (reference outputs tiny or constant, or with no finite "
        "value where --navigator-allow-nonfinite lets them pass).",
    ),
    _option(
        ALLOW_NONFINITE,
        "navigator_allow_nonfinite",
        "bool",
        "Let a check pass, with a warning, when an output has no finite reference value (every value NaN or Inf "
        "over every sample checked); by default it fails, as it compared nothing.",
    ),
    _option(
        MODE,
        "navigator_mode",
        "string",
        "Measurement windows: 'count' (N requests each, the default) or 'time' (N milliseconds each); or "
        "'instructions': instructions per request under valgrind's callgrind, one thread, 3 processes (CPU "
        "runtimes; windows, stability and time budget do not apply).",
    ),
    _option(
        WINDOW,
        "navigator_window",
        "string",
        "Window length: requests in count mode (default 50), milliseconds in time mode (default 5000).",
    ),
    _option(
        STABILITY,
        "navigator_stability",
        "string",
        "A measurement is stable when the last 3 windows' throughput and p50 latency lie within this percentage of "
        "their mean (default 10).",
    ),
    _option(
        MAX_TRIALS,
        "navigator_max_trials",
        "string",
        "Windows measured per batch size before an unsettled measurement is reported unstable (default 10; up to 3x "
        "that while it is still converging and the time budget lasts).",
    ),
    _option(
        INTERFERENCE,
        "navigator_interference",
        "string",
        "Windows during which other processes took the runtime's cores: 'exclude' them from the stable set "
        "(default) or only 'report' them (a shared machine whose noise you accept: pytest -n, shared runners).",
    ),
    _option(
        TIME_BUDGET,
        "navigator_time_budget",
        "string",
        "Seconds one runtime's measurement may take: the batch-size sweep stops before a size the rest cannot pay "
        "for, a later size not stable when it is spent is left out, and windows past max-trials stop (default 5; "
        "'none': unbounded). The first batch size and explicit ones are always measured in full; the first, still "
        "converging, may take windows until twice the budget.",
    ),
    _option(
        PROCESSES,
        "navigator_processes",
        "string",
        "Fresh processes a runtime is measured in when a timed verdict or a recording depends on it (a stored "
        "baseline, --update-baselines, a report, --navigator-against): the run, not the window, is the unit of "
        "evidence (default 3; 1: one process, whose verdicts say the run-to-run spread is unknown).",
    ),
    _option(
        NO_PROFILE,
        "navigator_no_profile",
        "bool",
        "Check correctness only: generate no MODEL::test_performance[RUNTIME] tests.",
    ),
    _option(
        THRESHOLDS,
        "navigator_thresholds",
        "string",
        "Regression limits, METRIC=LIMIT by commas: a percentage of the baseline or an absolute value (samples/s, ms); "
        "metrics throughput, p50, p90, p95, p99 (default: throughput=95%,p95=110%,p99=110%).",
    ),
    _option(
        CONSTRAINTS,
        "navigator_constraints",
        "string",
        "Limits on the model's profile, NAME=LIMIT by commas: flops (per request) and params, each a percentage of "
        "the baseline's figure or an absolute number (5e6, 5M, 2.5G); e.g. flops=60%,params=5e6. A violated one "
        "fails the performance test.",
    ),
    _option(
        TRACE,
        "navigator_trace",
        "string",
        "Write each runtime's trace after its profile: DIR/<model>/<runtime>/bs<N>.trace.json (Chrome trace format, "
        "opens in Perfetto) and a .top.txt table of the slowest operators, from a few untimed requests per batch size.",
    ),
    _option(
        REQUIRE_BASELINE,
        "navigator_require_baseline",
        "bool",
        "Fail a performance test that has no stored baseline for this hardware (default: NEW passes); "
        "the same as --navigator-missing-baseline=fail.",
    ),
    _option(
        MISSING_BASELINE,
        "navigator_missing_baseline",
        "string",
        "What a performance test with no stored baseline for this hardware does: 'pass' (default: NEW, "
        "recorded by --update-baselines), 'skip' (skipped as not recorded, naming the file and hardware) or 'fail'.",
    ),
    _option(
        INCONCLUSIVE,
        "navigator_inconclusive",
        "string",
        "What an unstable measurement does: 'fail' (default) or 'warn'.",
    ),
    _option(
        NORMALIZE,
        "navigator_normalize",
        "bool",
        "Judge baselines on calibration-normalized figures (throughput relative to a fixed workload measured "
        "beside it), not raw ones.",
    ),
    _option(
        AGAINST,
        "navigator_against",
        "string",
        "An older model file (e.g. from the main branch): each runtime measures both, windows interleaved, and is "
        "judged against the old one (A/B, no stored baseline needed).",
    ),
    _option(
        RUNTIME_OPTION,
        "navigator_runtime_options",
        "linelist",
        "A runtime's option, RUNTIME:OPTION=VALUE[,OPTION=VALUE] (repeatable), e.g. "
        "onnxruntime-cpu:intra_op_num_threads=1; options that differ from the defaults are part of the runtime's id "
        "in test ids, reports and baselines.",
    ),
    _option(
        AGREEMENT,
        "navigator_agreement",
        "linelist",
        "Thresholds of the agreement verdict of quantized (int8) runtimes, [RUNTIME:]NAME=VALUE[,...] (repeatable; "
        "no RUNTIME: all): top1, topk (shares of rows), k, cosine (median), sqnr, floor (dB), e.g. sqnr=20,top1=95%.",
    ),
    _option(
        CACHE,
        "navigator_cache",
        "string",
        "Directory of built artifacts (ONNX exports, TorchScript, AOTInductor packages, TensorRT engines, "
        "torch.compile's caches), of the reference's outputs and truth per sample and of the model's FLOP counts, "
        "reused across runs, keyed by model content, options, library "
        "versions and device (default: .navigator/cache under the rootdir; 'none' builds everything in a temporary "
        "folder and keeps nothing).",
    ),
    _option(
        REBUILD,
        "navigator_rebuild",
        "bool",
        "Build every artifact (and compute every stored truth) again and replace its cache entry.",
    ),
    _option(
        BASELINES,
        "navigator_baselines",
        "string",
        "Directory of stored performance baselines (default: baselines/ under the rootdir).",
    ),
    _option(
        REPORT,
        "navigator_report",
        "string",
        "Write a JSON report of the run to this path (schema: pytest_navigator/report/report.schema.json).",
    ),
    _option(
        HTML,
        "navigator_html",
        "string",
        "Write a self-contained HTML report of the run to this path: the verdict table and, per model, throughput "
        "against batch size, latency percentiles, runtimes against the baseline and correctness (plots need "
        "matplotlib: pip install 'pytest-navigator[report]').",
    ),
    _option(
        MARKDOWN,
        "navigator_markdown",
        "string",
        "Write the verdict table and per-runtime details as Markdown to this path (a PR comment). Under GitHub "
        "Actions ($GITHUB_STEP_SUMMARY set) the same text is also appended to the job summary.",
    ),
    _option(
        BENCHMARK_JSON,
        "navigator_benchmark_json",
        "string",
        "Write the measurements in pytest-benchmark's JSON format to this path (for pytest-benchmark compare and "
        "github-action-benchmark's tool: 'pytest'): one entry per model, runtime and batch size, seconds per request.",
    ),
    _option(
        LATENCY_BUDGET,
        "navigator_latency_budget",
        "string",
        "Milliseconds of p99 latency a request may take: the best runtime reported is the highest-throughput runtime "
        "and batch size whose p99 is within it (default: none, the highest throughput).",
    ),
    _option(
        DEVICES,
        "navigator_devices",
        "string",
        "GPUs for pytest-xdist workers, one each: 'auto' (every visible GPU) or indices '0,1' into the visible ones "
        "(an outer CUDA_VISIBLE_DEVICES is respected); each worker sees only its GPU (default: unset, every worker "
        "sees every GPU).",
    ),
    _option(
        ISOLATION,
        "navigator_isolation",
        "string",
        "Where runtimes run: 'process' (the default: each in its own worker process, so one that hangs or crashes "
        "fails its own tests and the others go on) or 'none' (in pytest's process: faster to start, unprotected).",
    ),
    _option(
        TIMEOUT,
        "navigator_timeout",
        "string",
        "Seconds a runtime may take to answer one request (a sample, a measurement window; a build may take 10 "
        "times as long) before it is killed and its tests fail (default: 120, or 100x the slowest answer so far; "
        "1800 for a build).",
    ),
    Option(
        UPDATE_BASELINES,
        "navigator_update_baselines",
        None,
        "bool",
        "Accept today's speed: write this run's stable measurements of runtimes that passed correctness into the "
        "baseline files, keeping every other entry.",
    ),
)

BY_FLAG = {option.flag: option for option in OPTIONS}

#: The `navigator` marker's settings, in the order help lists them: name -> what it sets. A setting
#: that is a per-test value of an option names the option (its help applies); items.py accepts
#: exactly these keys, and the documentation's reference is generated from this table.
MARKER_SETTINGS: dict[str, str] = {
    "verify": "a VerifyFunction, (reference samples, runtime samples) -> bool, that judges the runtime's outputs "
    "instead of the error budget (pytest_navigator.allclose, topk_agreement, cosine, or your own)",
    "examples": EXAMPLES,
    "strict": STRICT,
    "allow_nonfinite": ALLOW_NONFINITE,
    "agreement": "a quantized runtime's agreement thresholds, e.g. {'sqnr': 20, 'top1': 0.95} (as " + AGREEMENT + ")",
    "runtime_options": "runtime options by runtime name for the navigator_runner fixture, e.g. "
    "{'onnxruntime-cpu': {'intra_op_num_threads': 1}} (as " + RUNTIME_OPTION + ")",
    "timeout": TIMEOUT,
    "mode": MODE,
    "window": WINDOW,
    "stability": STABILITY,
    "max_trials": MAX_TRIALS,
    "time_budget": TIME_BUDGET,
    "interference": INTERFERENCE,
    "profile": "False: no measurement for this test (as " + NO_PROFILE + ")",
    "batch_sizes": BATCH_SIZES,
    "thresholds": "regression limits by metric, e.g. {'throughput': '95%', 'p95': 12.5} (as " + THRESHOLDS + ")",
    "constraints": "limits on the model profile and memory, e.g. {'params': '5M'} (as " + CONSTRAINTS + ")",
}


#: The marker's line in `pytest --markers`.
MARKER_LINE = (
    f"navigator({', '.join(f'{name}=None' for name in MARKER_SETTINGS)}): settings of pytest-navigator's checks for "
    "this test (verify: a VerifyFunction; profile=False: no measurement; thresholds: e.g. {'throughput': '95%'}; "
    "runtime_options: e.g. {'onnxruntime-cpu': {'intra_op_num_threads': 1}} for the navigator_runner fixture; "
    "the others as the --navigator-* options of the same name)."
)

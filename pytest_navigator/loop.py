"""One run loop: every model's runtimes checked, then the ones that passed measured and judged, in the
order the plugin's generated tests run them. `NavigatorSession.run()` is this; `navigator profile`
calls it; the plugin's items call the same steps one test at a time.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from pytest_navigator.errors import NavigatorError


def run_all(session: Any, say: Callable[[str], None], freeze_heap: bool = False) -> list[str]:
    """Every model's runtimes checked, then the ones that passed measured and judged, in the order the
    plugin's tests run (`navigator profile`). `say` hears the steps; returns one line per failure.
    `session`: the NavigatorSession that runs (it calls this; typed loosely, so the import goes one way).
    `freeze_heap`: the process is this run's own (the CLI's command line), so what it holds once the models
    are loaded lives until it ends: frozen (gc.freeze), as the plugin's run does once its tests are collected."""
    from pytest_navigator.check.correctness import CorrectnessFailure
    from pytest_navigator.gate.policy import Outcome
    from pytest_navigator.measure.instructions import CannotCount
    from pytest_navigator.measure.profiler import PerformanceFailure

    session.registry.select(session.settings.runtimes)
    for name in session.runtime_options:
        session.builds.runtime_id(name)
    if session.settings.isolation == "process":
        from pytest_navigator.runtimes.remote import start_fork_server

        start_fork_server(session.settings.model_files)  # it imports and loads them beside the loading below
    models = session.load_models()
    for model in models:
        session.builds.check_batch_sizes(model)
    session.load_user_samples()
    failures: list[str] = []
    planned = {model.path: [p for p in session.builds.plan(model) if not p.skip_reason] for model in models}
    if freeze_heap:
        # no garbage collection walks torch's modules and the loaded models again: a MobileNet's `navigator
        # profile` spent 1.6-1.9 s after its last line collecting them at exit
        gc.freeze()
    session.builds.build_ahead([(model, plan.name) for model in models for plan in planned[model.path]])
    for model in models:
        plans = planned[model.path]
        for plan in plans:  # every check first, as the plugin orders its tests: they build the runtimes
            say(f"{model.name} {plan.name}: checking correctness")
            try:
                session.check_correctness(model, plan.name)
            except (CorrectnessFailure, NavigatorError) as failure:
                failures.append(f"{model.name} {plan.name}: correctness failed: {failure}")
        if not session.settings.profiler.run_profiling:
            continue
        for plan in plans:
            if session.results.result(model.path, plan.name).status != "passed":
                continue  # a wrong runtime's speed is not worth measuring
            say(f"{model.name} {plan.name}: measuring")
            try:
                _, outcome, broken = session.check_performance(model, plan.name)
            except CannotCount as reason:
                say(f"{model.name} {plan.name}: skipped: instruction counts: {reason}")
                continue
            except (PerformanceFailure, NavigatorError) as failure:
                failures.append(f"{model.name} {plan.name}: performance failed: {failure}")
                continue
            if outcome.warning:
                say(f"warning: {outcome.warning}")
            if outcome.outcome == Outcome.FAIL:
                failures.append(outcome.message + (f"\n{broken}" if broken else ""))
            elif broken:
                failures.append(broken)
            elif outcome.outcome == Outcome.SKIP:
                say(f"{model.name} {plan.name}: skipped: {outcome.message}")
    return failures

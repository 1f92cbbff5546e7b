"""--navigator-constraints judged for a performance test: the model's profile (model/profile.py) and the
runtime's peak RSS against limits, absolute or a share of a reference figure: the --navigator-against
model's in an A/B run, else the stored baseline entry's.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING, Any

from pytest_navigator import options
from pytest_navigator.config import MeasurementMode
from pytest_navigator.gate.baselines import BaselineError
from pytest_navigator.model.loader import Model
from pytest_navigator.model.profile import check

if TYPE_CHECKING:
    from pytest_navigator.measure.profiler import RuntimeProfile


def constraint_failure(
    session: Any, model: Model, runtime: str, profile: RuntimeProfile, constraints: list[Any], found: Any
) -> str:
    """What violates --navigator-constraints (a failure message), else "". A percentage is of the
    --navigator-against model's figure in an A/B run, else of the stored baseline entry's; one
    with no figure to read is said in a warning (a failure under --navigator-require-baseline)."""
    where = f"{runtime} on {model.name}"
    if found is None:
        error = session.results.models[model.path].profile_error
        return f"{where}: the constraints cannot be checked: the model's profile could not be computed: {error}"
    sizes = sorted(found.flops)
    stored: dict[int, Any] = {}
    if session.against_model is not None:
        old = session.model_profile(session.against_model, sizes)
        source = f"the A/B model {session.against_model.name}"
        if old is not None:
            stored = {b: {"parameters": old.parameters, "flops": old.flops.get(b)} for b in sizes}
    else:
        source = str(session.baseline_store.path_for(model.name, model.fingerprint))
        counted = profile.config.measurement_mode is MeasurementMode.INSTRUCTIONS
        hardware, key = session.hardware(runtime, counted), profile.runtime if counted else runtime
        with contextlib.suppress(BaselineError):  # an unreadable file fails the gate already
            baselines = session.baseline_store.load(model.name, model.fingerprint)
            for b in sizes:
                entry = baselines.get((hardware, key, b)) or {}
                peak = (entry.get("peak_memory") or {}).get("rss_bytes")
                stored[b] = {**(entry.get("model") or {}), **({"peak_rss": peak} if peak else {})} or None
    peaks = {b.batch_size: b.peak_rss for b in profile.batches}
    checked = check(constraints, found, stored, peaks)
    if checked.unjudged:
        text = f"{where}: constraints not judged (nothing to compare in {source}): " + "; ".join(checked.unjudged)
        if session.settings.require_baseline:
            return f"{text} ({options.REQUIRE_BASELINE}); record a baseline with {options.UPDATE_BASELINES}."
        warnings.warn(text, stacklevel=2)
    if not checked.violations:
        return ""
    return f"{where} violates its constraints (against {source}):\n" + "\n".join(
        f"  {v.describe()}" for v in checked.violations
    )

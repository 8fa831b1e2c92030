"""vlm overload's bookkeeping: outcomes -> a phase's counts and quantiles, and what passes."""
from __future__ import annotations

from vlm_tools.bench.overload import OverloadReport, Phase, _summarize, format_report, passed


def _phase(name, outcomes, refusals=(), sent=None, rate=10.0):
    phase = Phase(name, rate, duration_s=10.0)
    phase.sent = len(outcomes) if sent is None else sent
    return _summarize(phase, outcomes, list(refusals))


def test_outcomes_become_counts_and_quantiles():
    outcomes = [("ok", 0.1 * i) for i in range(1, 101)] + [("refused", 0.01)] * 5 + \
        [("expired", 30.0), ("ServerError INTERNAL: generator: boom", 0.2)]
    phase = _phase("4x", outcomes, ["preprocess: server busy: 32"] * 5, sent=110)
    assert (phase.accepted, phase.refused, phase.expired, phase.unanswered) == (100, 5, 1, 3)
    assert phase.other_errors == {"ServerError INTERNAL: generator: boom": 1}
    assert phase.accepted_p50_s == 5.1 and phase.accepted_p99_s == 10.0 and phase.accepted_max_s == 10.0
    assert phase.refused_by == {"preprocess: server busy: 32": 5} and phase.answered_rate == 10.0
    assert "refused by preprocess" in format_report(OverloadReport("r", 16, 24, [phase]))


def test_passes_only_bounded_fast_and_clean():
    one = _phase("1x", [("ok", 0.5)] * 10)
    good = _phase("4x", [("ok", 1.2)] * 10 + [("refused", 0.2)] * 30)
    assert passed(OverloadReport("r", 16, 24, [one, one, good]))
    slow = _phase("4x", [("ok", 1.6)] * 10 + [("refused", 0.2)] * 30)
    assert not passed(OverloadReport("r", 16, 24, [one, one, slow]))          # p99 over 3x the 1x p99
    late = _phase("4x", [("ok", 1.2)] * 10 + [("refused", 2.0)] * 30)
    assert not passed(OverloadReport("r", 16, 24, [one, one, late]))          # refusals must be fast
    hung = _phase("4x", [("ok", 1.2)] * 10, sent=11)
    assert not passed(OverloadReport("r", 16, 24, [one, one, hung]))

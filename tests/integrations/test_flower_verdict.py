import math

import pytest

pytest.importorskip("flwr", reason="needs the flower extra")

from gradguard.integrations.flower.strategy import _verdict  # noqa: E402
from gradguard.integrations.flower.verdict import (  # noqa: E402
    REASON_PREFIX,
    failure_fields,
    from_reason,
    to_reason,
    to_record,
)


def test_record_round_trips_through_an_error_reason_and_a_config_record():
    fields = failure_fields("the handler raised ValueError: x")
    assert from_reason(to_reason(fields)) == {
        **fields,
        "score": pytest.approx(math.nan, nan_ok=True),
    }
    assert dict(to_record(fields))["summary"] == fields["summary"]
    assert from_reason("some other error") is None
    assert from_reason(f"{REASON_PREFIX}: not json") is None


def test_a_hostile_record_is_coerced_not_trusted():
    v = _verdict(3, {"flagged": 0, "score": "lots", "summary": 7, "elapsed-s": None})
    assert (v.client_id, v.malicious, v.allowed, v.summary) == (3, False, False, "7")
    assert math.isnan(v.score) and math.isnan(v.elapsed_s)

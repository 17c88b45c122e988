import json

from gradguard.bench.inprocess import run_inprocess
from gradguard.bench.records import result_from_dict, result_to_dict
from gradguard.bench.scenario import Scenario


def test_json_round_trip_keeps_every_number():
    result = run_inprocess(
        Scenario(clients=2, rounds=2, attack_rounds=(2,), epochs=1), guarded=[0], attacked=True
    )
    d = json.loads(json.dumps(result_to_dict(result)))
    again = result_from_dict(d)
    assert result_to_dict(again) == d
    assert again.leaked == result.leaked > 0
    assert again.abstentions == result.abstentions == 1

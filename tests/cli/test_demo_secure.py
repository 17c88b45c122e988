"""``gradguard demo --attack loki`` and ``--attack inconsistency`` (issue 10, item 5): under
secure aggregation, unguarded clients leak images from the secure sum (LOKI: every client;
inconsistency: only the target), guarded clients refuse the attacked rounds and leak none;
with ``--refusal cover`` they still refuse, but the round's sum keeps their covers."""

import json

import pytest

from gradguard.cli import main


def demo(capsys, *argv):
    assert main(["demo", "--json", "--no-report", "--rounds", "3", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_loki_leaks_from_every_unguarded_client_and_none_guarded(capsys):
    s = demo(capsys, "--attack", "loki")
    assert s["secure_aggregation"] and s["model"] == "convnet"
    assert s["leaked_guarded"] == 0
    # each client's own block: images leak from all four (in-process, round 3)
    assert set(s["leaked_by_client"]["unguarded"]) == {"0", "1", "2", "3"}
    assert all(n >= 6 for n in s["leaked_by_client"]["unguarded"].values()), s
    assert s["abstained_by_client"] == {str(c): [3] for c in range(4)}


def test_loki_demo_raises_no_alarm_in_its_honest_rounds(capsys):
    """Ten rounds on LOKI's wide convnet, 16 images per client: the honest rounds after the
    attacks are accepted (a lone chance pair at batch 16 is no imprint structure)."""
    assert main(["demo", "--json", "--no-report", "--attack", "loki"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["leaked_guarded"] == 0 and s["leaked_unguarded"] >= 60, s
    assert s["false_alarms"] == 0, s
    assert s["abstained_by_client"] == {str(c): [3, 5] for c in range(4)}


@pytest.mark.parametrize("refusal", ["drop", "cover"])
def test_inconsistency_leaks_only_the_target_and_guarded_clients_refuse(capsys, refusal):
    s = demo(capsys, "--attack", "inconsistency", "--refusal", refusal)
    assert list(s["leaked_by_client"]["unguarded"]) == ["0"]  # the target alone
    assert s["leaked_unguarded"] >= 8, s
    assert s["leaked_guarded"] == 0
    assert s["abstentions"] == 4 and s["refusal"] == refusal
    assert s["false_alarms"] == 0

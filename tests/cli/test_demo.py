"""``gradguard demo --json`` on its defaults: the server turns malicious in rounds 3 and 5;
unguarded clients leak real images, guarded clients leak none and lose < 2 accuracy points
against an attack-free run."""

import json

from gradguard.cli import main


def test_demo_json_must_show(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["demo", "--json", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["leaked_guarded"] == 0
    assert summary["leaked_unguarded"] > 0
    assert summary["abstentions"] == 2 * summary["clients"]  # rounds 3 and 5, every client
    assert summary["false_alarms"] == 0
    acc = summary["final_accuracy"]
    assert abs(acc["guarded"] - acc["attack_free"]) <= 0.02
    assert len(summary["rounds"]) == 10
    assert [r["round"] for r in summary["rounds"] if r["attack"]] == [3, 5]
    assert (out / "index.html").exists() and (out / "accuracy.png").exists()
    assert list(out.glob("leak_unguarded_round3_*.png"))


def test_demo_bad_flags_one_line_error(capsys):
    assert main(["demo", "--attack-rounds", "12"]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err


def test_default_attack_rounds_fit_a_shorter_demo():
    from gradguard.cli import build_parser
    from gradguard.cli.demo import scenario_from

    def rounds(*argv):
        return scenario_from(build_parser().parse_args(["demo", "--no-report", *argv]))

    assert rounds().attack_rounds == (3, 5)
    assert rounds("--rounds", "4").attack_rounds == (3, 4)
    assert rounds("--rounds", "2").attack_rounds == (2,)
    assert rounds("--rounds", "1").attack_rounds == (1,)

"""The false-positive cache key: detection code changes it, a threshold's default does not
(defaults enter per detector, through detection_versions)."""

from gradguard.experiments.false_positives import _without_threshold_defaults, detection_versions

SOURCE = (
    'T = (Threshold("z", 1.0, "warmup.z", floor=2.0), Threshold("r", default=3.0, check="c"))\n'
)


def test_threshold_defaults_stay_out_of_the_code_hash():
    key = _without_threshold_defaults
    assert key(SOURCE) == key(SOURCE.replace("1.0", "5.0").replace("3.0", "7.0"))
    assert key(SOURCE) != key(SOURCE.replace("floor=2.0", "floor=2.5"))
    assert key(SOURCE) != key(SOURCE + "def f():\n    return 1\n")


def test_each_detector_has_its_own_version():
    versions = detection_versions(["warmup", "warmup+", "dsnr"])
    assert len(set(versions.values())) == len(versions) == 4  # the three and the Guard

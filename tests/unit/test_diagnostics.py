from hakeeper.conf.diagnostics import Diagnostics, Location, did_you_mean


def test_format_and_order() -> None:
    d = Diagnostics()
    d.warning(Location("b.conf", 3, 1), "later")
    d.error(Location("a.conf", 9, 4), "bad")
    assert d.has_errors
    assert [x.format() for x in d.sorted()] == [
        "a.conf:9:4: error: bad",
        "b.conf:3:1: warning: later",
    ]


def test_did_you_mean() -> None:
    assert did_you_mean("prioriti", ["priority", "state"]) == " (did you mean 'priority'?)"
    assert did_you_mean("zzz", ["priority"]) == ""

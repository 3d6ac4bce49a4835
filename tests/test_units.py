import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.core.units import parse_duration_ms, parse_size_mib


@pytest.mark.parametrize("text, ms", [("20ms", 20.0), ("500us", 0.5), ("0.02s", 20.0), ("20 ms", 20.0),
                                      ("1e1ms", 10.0), ("250µs", 0.25)])
def test_durations(text, ms):
    assert parse_duration_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize("text, mib", [("256MB", 256e6 / 2**20), ("256MiB", 256.0), ("1GB", 1e9 / 2**20),
                                       ("2GiB", 2048.0), ("512KB", 512e3 / 2**20), ("64KiB", 0.0625)])
def test_sizes(text, mib):
    assert parse_size_mib(text) == pytest.approx(mib)


@pytest.mark.parametrize("text, message", [
    ("20", "has no unit"), ("20parsecs", "unknown latency unit 'parsecs'"), ("-5ms", "must be positive"),
    ("0ms", "must be positive"), ("fast", "cannot read"), ("infms", "cannot read"),
])
def test_bad_durations(text, message):
    with pytest.raises(ValueError, match=message):
        parse_duration_ms(text)


@pytest.mark.parametrize("args, message", [
    (["--latency", "20"], "has no unit"),
    (["--latency", "20parsecs"], "unknown latency unit"),
    (["--latency", "-3ms"], "must be positive"),
    (["--memory", "256"], "has no unit"),
    (["--memory", "0MB"], "must be positive"),
    (["--memory", "2TB"], "unknown memory unit"),
])
def test_fit_rejects_bad_budgets_with_usage_exit(args, message):
    r = CliRunner().invoke(cli, ["fit", "--target", "host", *args])
    assert r.exit_code == 2
    assert message in r.output and "Traceback" not in r.output

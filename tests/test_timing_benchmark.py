"""The repeated-timing benchmark's arithmetic: ratios are taken within each round, then their median."""

from benchmarks.timing import summary, table


def _round(**seconds):
    return {variant: {"quantize_seconds": s, "peak_rss_mb": 100.0 * s} for variant, s in seconds.items()}


def test_ratios_are_paired_within_rounds():
    # a slow second round slows both tools: the paired ratios stay 0.5, the ratio of medians would not
    rounds = [_round(nncf=20.0, ovptq=10.0), _round(nncf=30.0, ovptq=15.0), _round(nncf=22.0, ovptq=12.1)]
    row = summary("m", ["nncf", "ovptq"], rounds)
    ovptq = row["variants"]["ovptq"]
    assert ovptq["against_first"] == {"reference": "nncf", "median": 0.5, "min": 0.5, "max": 12.1 / 22.0}
    assert ovptq["seconds_median"] == 12.1 and ovptq["peak_rss_mb_median"] == 1210.0
    assert row["variants"]["nncf"]["against_first"] is None


def test_previous_variant_ratio_and_table():
    rounds = [_round(nncf=20.0, ovptq_nobc=8.0, ovptq=10.0), _round(nncf=20.0, ovptq_nobc=10.0, ovptq=10.5)]
    row = summary("m", ["nncf", "ovptq_nobc", "ovptq"], rounds)
    assert row["variants"]["ovptq"]["against_previous"]["reference"] == "ovptq_nobc"
    assert row["variants"]["ovptq"]["against_previous"]["median"] == (1.25 + 1.05) / 2
    assert row["variants"]["ovptq_nobc"]["against_previous"] is None
    lines = table([row])
    assert lines[-1].startswith("| m | ovptq | 10.25 (10.0, 10.5) | 0.51 (0.50-0.53) of nncf | 1.15 (1.05-1.25) of "
                                "ovptq_nobc |")

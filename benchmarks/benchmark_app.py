"""The benchmark_app comparison, as used by the benchmarks; the same as the `ovptq bench` command.

    python -m benchmarks.benchmark_app fp32.xml int8.xml [more.xml ...] [--rounds 4] [--seconds 10] [--shape ...]
"""

import sys

from ovptq.runtime.bench import (Entry, Measurement, Ratio, benchmark_app_command, compare, cpu_description,
                                 default_precision, format_report, fp32_entries, main, ratio, run_once)

__all__ = ["Entry", "Measurement", "Ratio", "benchmark_app_command", "compare", "cpu_description",
           "default_precision", "format_report", "fp32_entries", "main", "ratio", "run_once"]

if __name__ == "__main__":
    sys.exit(main())

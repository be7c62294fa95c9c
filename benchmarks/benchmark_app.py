"""The benchmark_app comparison, as used by the benchmarks; the same as the `ovptq bench` command.

    python -m benchmarks.benchmark_app fp32.xml int8.xml [more.xml ...] [--rounds 3] [--seconds 10] [--shape ...]
"""

import sys

from ovptq.runtime.bench import (Measurement, benchmark_app_command, compare, cpu_description, format_report, main,
                                 run_once)

__all__ = ["Measurement", "benchmark_app_command", "compare", "cpu_description", "format_report", "main", "run_once"]

if __name__ == "__main__":
    sys.exit(main())

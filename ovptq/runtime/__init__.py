"""What the CPU plugin really runs: the compiled runtime model read back (`layers`), the INT8 proof built on it
(`inspect`), and benchmark_app speed comparisons (`bench`)."""

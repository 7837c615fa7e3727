"""Tools around a trained model and the package: `python -m ser.tools.predict` and
`ser.tools.export` (through `inference`, a checkpoint's network and features), the
complexity report, and the speed benchmarks (`bench`, `bench_features`)."""

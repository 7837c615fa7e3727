"""Tools around a trained model: `ser-predict` and `ser-export` (through `inference`, a
checkpoint's network and features), and the complexity report (`ser-complexity`). The
developers' speed benchmarks live beside the package, in benchmarks/."""

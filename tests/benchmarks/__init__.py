"""Tests of the developers' benchmarks and GPU check (benchmarks/)."""

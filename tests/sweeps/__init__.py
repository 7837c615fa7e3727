"""Tests of ser.sweeps."""

"""Tests of ser.training."""

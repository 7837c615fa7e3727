"""Tests of ser.data."""

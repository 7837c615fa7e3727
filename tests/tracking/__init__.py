"""Tests of ser.tracking."""

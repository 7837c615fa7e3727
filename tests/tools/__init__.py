"""Tests of ser.tools."""

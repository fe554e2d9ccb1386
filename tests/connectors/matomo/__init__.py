"""Tests of the Matomo connector (a package, so its test_standard module has a unique name)."""

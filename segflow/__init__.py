"""segflow: marketing automation as code.

This package imports nothing from Django at the top level, so that `segflow.client` works in any
Python program and `segflow.config` can be imported by a config file.
"""

"""Kept for tools that call ``python setup.py``; all metadata lives in setup.cfg."""

from setuptools import setup

setup()

"""
hubproxy: a Twisted registry mirror and GitHub / Hugging Face download proxy.
"""

__version__ = "0.1.0"

"""Tessera: decentralized, verifiable sharded inference.

This package holds what every component shares (errors, typed ids, the plan
record, canonical encodings) and the ``tessera`` command line. The components
themselves live in the top-level packages ``chain``, ``worker``, ``router``.
"""

__version__ = "0.1.0"

"""Tessera's application floor: the ``tessera`` command line, the requester library and
the dev cluster. The protocol's vocabulary is in ``proto``; the components are
``chain``, ``worker`` and ``router``.
"""

__version__ = "0.1.0"

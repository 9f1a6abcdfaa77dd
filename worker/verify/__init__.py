"""Verification among strangers: hop receipts and verification by re-execution.

* :mod:`worker.verify.fingerprint`: a chunk's output pinned in ~270 bytes;
* :mod:`worker.verify.receipt`: a hop's receipt, its digest, the replica's receipts root;
* :mod:`worker.verify.spec`: the job's execution spec, per-class tolerances, verdicts;
* :mod:`worker.verify.reexec`: the verifier (one teacher-forced fp32 pass per replica);
* :mod:`worker.verify.inprocess`: a whole replica in one process, for measurement and tests.
"""

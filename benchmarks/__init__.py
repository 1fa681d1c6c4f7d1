"""Report generators and benchmarks that measure grukit and write the pages in ``docs/``; run from the
repository root as ``python -m benchmarks.<name>`` (``make results``, ``make compare``, ``make finetune-report``,
``make bench``). Not part of the installed package."""

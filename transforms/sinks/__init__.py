"""Output: Hive-partitioned Parquet tables, the commit protocol that publishes a run as a unit
(staged files, intent log, manifests under ``_runs/``), the output lease (one writer per
directory), and the durable state of continuous runs under ``_state/``.
"""

"""The contracts between the stages: evidence (snapshot), the source keys (sources), findings and verdicts."""

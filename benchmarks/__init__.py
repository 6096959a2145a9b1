"""`make bench`: performance and scale measurements of fer_tf (see benchmarks/run.py)."""

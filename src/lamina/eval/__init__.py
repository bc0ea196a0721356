"""Evaluation: suites (task, safety, privacy, efficiency, judge), release gates and reports."""

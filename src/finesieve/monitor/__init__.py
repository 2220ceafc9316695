"""Production monitoring: slow evals from reviewers' decisions and drift against a run's reference statistics."""

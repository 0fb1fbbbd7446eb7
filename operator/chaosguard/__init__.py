"""chaosguard: a Kubernetes operator that runs chaos experiments inside enforced safety limits."""

__version__ = "0.1.0"

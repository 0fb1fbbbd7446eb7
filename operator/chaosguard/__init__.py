"""chaosguard: a Kubernetes operator that runs chaos experiments inside enforced safety limits.

One subpackage per layer, each importing only those listed before it (import-linter holds them to it):
`api` (models, CRDs), `decisions` (pure policy, selection, windows, SLOs), `clients` (Kubernetes,
Prometheus), `admission` (the admission judgement, signing), `runtime` (kopf handlers, the engine,
faults), `cli` (the `chaosguard` command and reports).
"""

__version__ = "0.1.0"

"""The API: the pydantic models of ChaosExperiment, ChaosPolicy and ChaosApproval, the CRDs generated
from them, durations, and how a validation error is told to a person.

May import: nothing of chaosguard outside `api` (everything else builds on it); no kopf, no
`kubernetes`, no I/O.
"""

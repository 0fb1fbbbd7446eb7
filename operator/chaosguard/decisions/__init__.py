"""The pure decisions: blast-radius policy, target selection, time windows, SLO verdicts, approvals,
author and approver stamps, platform guards, merge patches, and the injector's argv. Each is a
function of its inputs; the same decision is made by the operator, the webhooks and the CLI.

May import: `chaosguard.api` and each other. Never kopf, `kubernetes`, the clients or anything
that does I/O (import-linter checks this in `make lint`).
"""

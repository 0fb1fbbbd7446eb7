"""The `chaosguard` command (`main`, also the kubectl plugin): offline `validate`, `plan`, `crds`, `run`
(starts the runtime), the day-to-day commands (`ops`: status, abort, report), `approve`
(`approvals`), the CI gate `apply` with its JUnit output (`junit`), and the run reports (`report`).

May import: `api`, `decisions`, `clients`, and of the runtime only its entry points (`runner`,
`handlers`, `webhooks`, `security`), never the engine's internals.
"""

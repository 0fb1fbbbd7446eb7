"""The operator at run time: the kopf handlers (`handlers` for experiments, `webhooks` for admission,
`security` for the signing key and webhook server at start-up), the process around them (`runner`:
leader election, probes, metrics), and the engine with its parts (`engine` drives one experiment;
`gates`, `guard`, `faults` and the `injector/` script, `lanes`, `context`, `clock`, `logs`).

May import every layer below it: `api`, `decisions`, `clients`, `admission`. Only `runner`, `handlers`,
`webhooks` and `security` are for the CLI (`chaosguard run`); the rest is internal to the runtime.
"""

"""The admission judgement and the identity it rests on: whether an experiment or an approval may be
created (`judge`, with the author's permissions asked of the API), the signing key of author and
approver stamps (`signing`), and the webhook server's certificate (`webhook_tls`). The webhooks
that call the judge are kopf handlers, in `chaosguard.runtime.webhooks`; the engine's gates call it
again before every run.

May import: `chaosguard.api`, `chaosguard.decisions`, `chaosguard.clients`. Never kopf, the runtime
or the CLI.
"""

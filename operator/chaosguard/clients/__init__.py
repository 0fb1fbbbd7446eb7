"""The clients: the Kubernetes API (`kube`), the watch-backed cache of the cluster (`informers`) and
Prometheus (`prometheus`). They turn API objects into the views the decisions take.

May import: `chaosguard.api`, `chaosguard.decisions`, `kubernetes`, the Prometheus client. Never kopf,
and nothing above them (admission, runtime, cli).
"""

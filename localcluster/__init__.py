"""The local cluster: real Kubernetes parts on this machine, for the tests, the demo, the benchmarks and
`make sandbox`. A kube-apiserver with etcd and kwok nodes (`controlplane`), a real node with kubelet,
containerd and the operator's image (`realnode`), a real Prometheus (`prometheus`), the chaosguard
operator as a process (`operator`), the install of the chart and manifests (`install`), the QEMU guest
and network namespaces where netem runs (`vm`, `netns`), all of it together (`sandbox`), and `wait`.

Development only: it is not installed by pyproject and is not in the operator's image; it runs from
a checkout (the repository root on sys.path, as `python -m localcluster.sandbox` and pytest do).
May import chaosguard; never tests/ (import-linter checks both in `make lint`).
"""

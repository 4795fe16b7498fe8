"""Cluster: one lifecycle for any deployment, one node (this machine) or N (over ssh).

The facade the CLI uses: `up`, `down` (lifecycle.py), `status`, `read_logs`,
`follow_logs`, `capture`, `diff_captures` (observe.py), `supervise`
(supervisor.py), `preflight` (preflight.py) and `resolve_target` (targets.py).
Beneath them: transports (this machine or OpenSSH), node runtimes (`process`
or `compose`), provisioning of the embedded engine, readiness, state.
"""

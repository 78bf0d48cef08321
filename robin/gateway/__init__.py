"""The data gateway: SFTP for people, on volumes mounted on the gateway's host (`robin gateway`).

`models` and `service` keep the accounts (one per activated volume); `activation` is the API's side (record
what is wanted, wait for the agent's report); `agent` is `robin gateway`'s node agent, which mounts and
unmounts (`mounting`), runs the checks (`checks`) and reports, one agent at a time (`lock`); `server` runs the
SSH server that checks the accounts, `sessions` ends live sessions when an account changes, `sftp` and
`confined` keep each session inside its volume's mount.
"""

"""The data gateway: SFTP for people, on volumes mounted on robin's own host (`robin gateway`).

`models` and `service` keep the accounts (one per activated volume); `server` runs the SSH server that
checks them, `sessions` ends live sessions when an account changes, `sftp` and `confined` keep each
session inside its volume's mount.
"""

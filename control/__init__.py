"""The client: the `llmops` CLI and everything that runs on the user's machine against Google Cloud (stack outputs,
launch/follow/cancel, image builds, deploy, doctor). The deployables (trainer/, serving/, infra/) never import it."""

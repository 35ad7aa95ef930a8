"""llmops-kit's Pulumi components: one ComponentResource per concern."""

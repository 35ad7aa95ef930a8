"""llmops-kit trainer: LoRA fine-tuning for text-to-SQL, locally or as a Vertex AI CustomJob."""

__version__ = "0.1.0"

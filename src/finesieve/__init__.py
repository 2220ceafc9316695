"""finesieve: take a text-moderation task from a prompt baseline to a fine-tuned model in production."""

__version__ = "0.1.0"

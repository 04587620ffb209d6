"""Example tasks for paretotune (`examples.digits:task`, `examples.minilm:task`)."""

"""The inference engine: load a model for inference, the Backend (local and openai:), decoding, scoring."""

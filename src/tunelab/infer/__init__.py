"""The inference engine: load a model for inference, the Backend Protocol and its backends (local, openai:, replay:), decoding, scoring."""

"""HTTP layer of the ML node: control (Gonka routes), OpenAI inference, health/metrics, error mapping."""

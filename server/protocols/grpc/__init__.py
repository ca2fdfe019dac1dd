"""The gRPC protocol: the Explain and Admin servicers and the server that carries them
(health, reflection, limits, credentials)."""

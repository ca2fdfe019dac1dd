"""Operations: security, metrics, reloads, signals and the rate-limited logs."""

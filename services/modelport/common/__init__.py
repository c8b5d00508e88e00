"""What every service shares: the runtime (settings, start, signals, drain, the
`--workers` supervisor), the gRPC server with its error boundary and TLS, and
telemetry (logs, metrics, traces)."""

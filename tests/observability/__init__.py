"""Apps and settings the metrics and tracing tests start in processes of their own."""

//! Counters and histograms, rendered as Prometheus text.

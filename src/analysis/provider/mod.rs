//! Metric providers: the I/O that turns a query into a typed measurement.

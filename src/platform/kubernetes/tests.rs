//! Controller I/O tests against a mocked API server.

//! The `vigil.dev/v1alpha1` API types. No I/O.
